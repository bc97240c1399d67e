"""Yealink AES compatibility mode against the known-answer vector (tests/data/yealink-aes/), and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.provisioning import yealink_aes

DATA = Path(__file__).resolve().parents[1] / "data" / "yealink-aes"
KEY = "ljB7jiDIQQ7XD888"


def test_the_key_file_decrypts_to_the_known_key() -> None:
    assert yealink_aes.decrypt_key((DATA / "encrypted_Security.enc").read_bytes()) == KEY


def test_the_key_encrypts_to_the_known_key_file() -> None:
    assert yealink_aes.encrypt_key(KEY) == (DATA / "encrypted_Security.enc").read_bytes()


def test_the_file_decrypts_byte_for_byte() -> None:
    assert yealink_aes.decrypt((DATA / "encrypted.cfg").read_bytes(), KEY) == (DATA / "expected-plain.cfg").read_bytes()


def test_the_plain_text_encrypts_byte_for_byte() -> None:
    assert yealink_aes.encrypt((DATA / "expected-plain.cfg").read_bytes(), KEY) == (DATA / "encrypted.cfg").read_bytes()


def test_the_vector_is_space_padded_not_pkcs7() -> None:
    plain = (DATA / "expected-plain.cfg").read_bytes()
    unpadded = plain.rstrip(b" ")
    assert len(unpadded) % 16 and yealink_aes.encrypt(unpadded, KEY) == (DATA / "encrypted.cfg").read_bytes()


@pytest.mark.parametrize(("key", "problem"), [
    ("short", "must be 16 characters"), ("ljB7jiDIQQ7XD8889", "must be 16 characters"),
    ("ljB7jiDIQQ7XD88!", "outside"), ("ljB7jiDIQQ7XD88 ", "outside"), ("ljB7jiDIQQ7XD88é", "outside"),
])
def test_bad_keys_are_refused_without_showing_them(key: str, problem: str) -> None:
    message = yealink_aes.key_problem(key)
    assert message is not None and problem in message and key not in message
    with pytest.raises(yealink_aes.AesError):
        yealink_aes.encrypt(b"x", key)


def test_every_special_character_of_the_guide_is_allowed() -> None:
    assert yealink_aes.key_problem("#$%*+,-.:=?@[]^_") is None
    assert yealink_aes.key_problem("{}~0aZ9bcdefghij") is None


def test_generated_keys_are_valid_and_differ() -> None:
    keys = {yealink_aes.generate_key() for _ in range(50)}
    assert len(keys) == 50 and all(yealink_aes.key_problem(k) is None for k in keys)


def test_names() -> None:
    assert yealink_aes.security_name("T46U/001565aabbcc.cfg") == "T46U/001565aabbcc_Security.enc"
    assert yealink_aes.security_name("sip.cfg") == "sip_Security.enc"


@given(st.binary(max_size=2000), st.text(alphabet=sorted(yealink_aes.KEY_CHARACTERS), min_size=16, max_size=16))
def test_round_trip(data: bytes, key: str) -> None:
    encrypted = yealink_aes.encrypt(data, key)
    assert len(encrypted) % 16 == 0
    assert yealink_aes.decrypt(encrypted, key) == yealink_aes.pad(data)
    assert yealink_aes.decrypt_key(yealink_aes.encrypt_key(key)) == key


@given(st.binary(max_size=100))
def test_decrypting_garbage_raises_only_its_error(data: bytes) -> None:
    for call in (lambda: yealink_aes.decrypt(data, KEY), lambda: yealink_aes.decrypt_key(data)):
        try:
            call()
        except yealink_aes.AesError:
            pass


def test_a_ciphertext_that_starts_with_a_hash_is_still_encrypted() -> None:
    # Found by the simulated phones: one encrypted file in 256 starts with '#' and was read as plain text.
    plain = b"#!version:1.0.0.1\naccount.1.user_name = 4001\n"
    data = yealink_aes.encrypt(plain, "key0000000000303")
    assert data[:1] == b"#"
    assert yealink_aes.looks_encrypted(data)
    assert not yealink_aes.looks_encrypted(yealink_aes.pad(plain))
    assert not yealink_aes.looks_encrypted(yealink_aes.pad("#!version:1.0.0.1\nlabel = caf\xe9\n".encode("latin-1")))
    assert not yealink_aes.looks_encrypted(b"")
