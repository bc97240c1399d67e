"""Yealink configuration encryption, compatibility mode (../shared/reference/protocols.md section 7).

A file is encrypted with AES-128-ECB under a 16-character key used as its bytes, after padding with spaces (0x20) to a
multiple of 16 bytes (not PKCS#7: the known-answer vector in ``tests/data/yealink-aes/`` decides). The key travels in
``<name>_Security.enc``: the key itself encrypted the same way under the fixed key that firmware and the vendor's tool
share. Decryption keeps the padding, as the vendor's tool does. Pure functions: no file, no logging.
"""

from __future__ import annotations

import secrets
import string

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

FIXED_KEY = b"EKs35XacP6eybA25"
KEY_LENGTH = 16
# Guide, "Encrypting Configuration Files": 0-9, A-Z, a-z and # $ % * + , - . : = ? @ [ ] ^ _ { } ~
KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "#$%*+,-.:=?@[]^_{}~")
GENERATED_CHARACTERS = string.ascii_letters + string.digits
SECURITY_SUFFIX = "_Security.enc"


class AesError(ValueError):
    """Bytes that cannot be decrypted, or a key that is not 16 allowed characters."""


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid key, or None. Never includes the key itself (it may end up in a log)."""
    if len(key) != KEY_LENGTH:
        return f"must be {KEY_LENGTH} characters, not {len(key)}"
    bad = sorted({c for c in key if c not in KEY_CHARACTERS})
    if bad:
        return f"has {len(bad)} character(s) outside 0-9 A-Z a-z # $ % * + , - . : = ? @ [ ] ^ _ {{ }} ~"
    return None


def _key_bytes(key: str | bytes) -> bytes:
    text = key if isinstance(key, str) else key.decode("latin-1")
    problem = key_problem(text)
    if problem:
        raise AesError(f"AES key {problem}")
    return text.encode("ascii")


def _cipher(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(key), modes.ECB())  # the vendor's format is ECB: nothing to choose


def pad(data: bytes) -> bytes:
    return data + b" " * (-len(data) % 16)


def encrypt(data: bytes, key: str | bytes) -> bytes:
    encryptor = _cipher(_key_bytes(key)).encryptor()
    return encryptor.update(pad(data)) + encryptor.finalize()


def decrypt(data: bytes, key: str | bytes) -> bytes:
    if len(data) % 16:
        raise AesError(f"{len(data)} bytes is not a whole number of AES blocks: not an encrypted file")
    decryptor = _cipher(_key_bytes(key)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def encrypt_key(key: str) -> bytes:
    """The 16 bytes of ``<name>_Security.enc`` for ``key``."""
    raw = _key_bytes(key)
    encryptor = _cipher(FIXED_KEY).encryptor()
    return encryptor.update(raw) + encryptor.finalize()


def decrypt_key(blob: bytes) -> str:
    """The key inside a ``<name>_Security.enc``; raises :class:`AesError` when it holds no valid key."""
    if len(blob) != KEY_LENGTH:
        raise AesError(f"a key file has {KEY_LENGTH} bytes, not {len(blob)}")
    decryptor = _cipher(FIXED_KEY).decryptor()
    raw = decryptor.update(blob) + decryptor.finalize()
    key = raw.decode("latin-1")
    problem = key_problem(key)
    if problem:
        raise AesError(f"the key file does not hold a valid key (it {problem})")
    return key


def generate_key() -> str:
    return "".join(secrets.choice(GENERATED_CHARACTERS) for _ in range(KEY_LENGTH))


def security_name(name: str) -> str:
    """``dir/0015651234ab.cfg`` -> ``dir/0015651234ab_Security.enc`` (the vendor tool's naming)."""
    folder, _, base = name.rpartition("/")
    stem = base[:-4] if base.lower().endswith(".cfg") else base
    return f"{folder}/{stem}{SECURITY_SUFFIX}" if folder else f"{stem}{SECURITY_SUFFIX}"


_TEXT_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def looks_encrypted(data: bytes) -> bool:
    """A whole number of AES blocks that is not text. Ciphertext is random bytes: one file in 256 starts with
    ``#``, so the first byte proves nothing; but random bytes are almost never UTF-8 without control characters,
    which every CFG file is (a Latin-1 one still has no control characters: it counts as text too)."""
    if not data or len(data) % 16:
        return False
    if any(c in _TEXT_CONTROLS for c in data[:256]):
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#!")  # a Latin-1 CFG file is still text
    return False
