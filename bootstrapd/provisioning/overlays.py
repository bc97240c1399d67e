"""The model's side of the resolver pipeline: rendered files, encryption keys, the AES transform, key files.

- :class:`RenderedFiles` (an Overlay): the inventory rendered through the tree's templates, rebuilt when an input
  changes (:meth:`RenderedFiles.refresh`); a build with errors never replaces the last good one.
- :class:`KeyStore`: the AES key of each served file. Administrator-given keys apply per class (the phones have
  them as ``static.auto_provision.aes_key_16.com`` / ``.mac``); otherwise each file gets its own key, derived from a
  secret created once in ``state_dir`` (0600), so one phone's key file opens no other file and an unchanged file
  stays byte-identical across restarts.
- :class:`EncryptTransform` (a Transform) and :class:`SecurityFiles` (an Overlay of ``<name>_Security.enc``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.inventory import Inventory, InventoryError, read_inventory
from bootstrapd.provisioning.names import file_class
from bootstrapd.provisioning.settings import EncryptSettings
from bootstrapd.provisioning.sources import Content
from bootstrapd.provisioning.templates import RenderSet, TemplateError, discover, identity, render_all

SECRET_FILE = "yealink-aes.secret"
MISSING = (0, 0, 0)  # the identity of a file that is not there

Problem = InventoryError | TemplateError


class RenderedFiles:
    def __init__(self, root: str | Path, inventory: Path | None) -> None:
        self.root = os.path.realpath(root)
        self.inventory_path = inventory
        self.current = RenderSet()
        self.inventory = Inventory(str(inventory or ""))
        self.problems: list[Problem] = []  # of the last build (empty when it was good)
        self.generation = 0  # builds put in force
        self._failed: dict[str, tuple[int, int, int]] | None = None  # the inputs of a build that had problems

    def build(self) -> tuple[Inventory, RenderSet]:
        if self.inventory_path is None:
            inventory, ident = Inventory(""), None
        else:
            inventory, ident = read_inventory(self.inventory_path), identity(str(self.inventory_path)) or MISSING
        return inventory, render_all(self.root, inventory, ident)

    def changed(self) -> bool:
        """Whether an input of the rendering changed since the last build (or templates came or went)."""
        last = self._failed if self._failed is not None else (self.current.inputs if self.generation else None)
        if last is None:
            return True
        current = {os.path.join(self.root, t) for t in discover(self.root)}
        known = {p for p in last if p.endswith(".j2") and p.startswith(self.root + "/")}
        if current != known:
            return True
        if self.inventory_path is not None and str(self.inventory_path) not in last:
            return True
        return any((identity(path) or MISSING) != ident for path, ident in last.items())

    def refresh(self, force: bool = False) -> list[Problem] | None:
        """Rebuild when something changed. None: nothing changed or new files in force; else the problems that
        kept the previous files in force."""
        if not force and not self.changed():
            return None
        inventory, result = self.build()
        problems: list[Problem] = [*inventory.errors, *result.errors]
        if problems:
            self.problems = problems
            self._failed = result.inputs  # not rebuilt again until one of these changes
            if self.generation == 0:
                self.inventory = inventory
            return problems
        self.current, self.inventory, self.problems, self._failed = result, inventory, [], None
        self.generation += 1
        return None

    def get(self, name: str) -> Content | None:
        rendered = self.current.files.get(name)
        if rendered is None:
            return None
        return Content(rendered.data, rendered.mtime, f"rendered:{rendered.template}")

    def names(self) -> Iterable[str]:
        return list(self.current.files)


class KeyStoreError(Exception):
    pass


def _read_secret(path: Path) -> bytes:
    st = path.stat()
    if st.st_mode & 0o077:
        raise KeyStoreError(f"{path} is readable by others (mode {st.st_mode & 0o777:o}): chmod 600 it")
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise KeyStoreError(f"{path} does not hold a 64-digit hex secret")
    return secret


def _create_secret(path: Path) -> None:
    """Write a new secret atomically, 0600, never replacing one another process created meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class KeyStore:
    """The key each encrypted file leaves with. Keys are never logged nor part of any message."""

    def __init__(self, settings: EncryptSettings, state_dir: Path, *, create: bool = True) -> None:
        self.settings = settings
        self.ephemeral = False  # True: no secret on disk yet (check/explain create nothing): keys are examples
        self.mtime = 0.0
        self._secret = b""
        needs_secret = (settings.common and not settings.common_key) or (settings.mac and not settings.mac_key)
        if not needs_secret:
            return
        path = state_dir / SECRET_FILE
        try:
            if not path.exists():
                if not create:
                    self.ephemeral = True
                    self._secret = secrets.token_bytes(32)
                    return
                _create_secret(path)
            self._secret = _read_secret(path)
            self.mtime = path.stat().st_mtime
        except OSError as exc:
            raise KeyStoreError(f"{path}: {exc.strerror or exc}") from None

    def key_for(self, name: str) -> str | None:
        """The key of ``name`` when its class is encrypted, else None."""
        cls = file_class(name)
        if cls == "mac" and self.settings.mac:
            given = self.settings.mac_key
        elif cls == "common" and self.settings.common:
            given = self.settings.common_key
        else:
            return None
        return given or self._derive(cls, name)

    def _derive(self, cls: str, name: str) -> str:
        out: list[str] = []
        counter = 0
        alphabet = yealink_aes.GENERATED_CHARACTERS
        limit = 256 - 256 % len(alphabet)  # rejection sampling: every character equally likely
        while len(out) < yealink_aes.KEY_LENGTH:
            digest = hmac.new(self._secret, f"{cls}\0{name}\0{counter}".encode(), hashlib.sha256).digest()
            out += [alphabet[b % len(alphabet)] for b in digest if b < limit]
            counter += 1
        return "".join(out[:yealink_aes.KEY_LENGTH])


class EncryptTransform:
    """Yealink AES on the way out, for the configured classes; results kept while the input bytes are the same.

    Called on the event loop and from the file services' worker threads (a file read off the loop is transformed
    there): the kept results are guarded by a lock, the encryption itself runs outside it."""

    def __init__(self, keys: KeyStore, cache_entries: int = 4096) -> None:
        self.keys = keys
        self._cache: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()
        self._max = cache_entries
        self._lock = threading.Lock()

    def applies(self, name: str) -> bool:
        return self.keys.key_for(name) is not None

    def apply(self, name: str, data: bytes) -> bytes:
        key = self.keys.key_for(name)
        if key is None:
            return data
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] is data:
            return hit[1]
        encrypted = yealink_aes.encrypt(data, key)
        with self._lock:
            self._cache[name] = (data, encrypted)
            self._cache.move_to_end(name)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return encrypted


class SecurityFiles:
    """``<name>_Security.enc`` beside every file that leaves encrypted (when ``key_files`` is on)."""

    def __init__(self, keys: KeyStore, exists: Callable[[str], bool], candidates: Callable[[], Iterable[str]]) -> None:
        self.keys = keys
        self.exists = exists
        self.candidates = candidates

    def source_of(self, name: str) -> str | None:
        if not name.endswith(yealink_aes.SECURITY_SUFFIX):
            return None
        return name[:-len(yealink_aes.SECURITY_SUFFIX)] + ".cfg"

    def get(self, name: str) -> Content | None:
        if not self.keys.settings.key_files:
            return None
        source = self.source_of(name)
        if source is None:
            return None
        key = self.keys.key_for(source)
        if key is None or not self.exists(source):
            return None
        return Content(yealink_aes.encrypt_key(key), self.keys.mtime, f"security-key:{source}")

    def names(self) -> Iterable[str]:
        if not self.keys.settings.key_files:
            return []
        return [yealink_aes.security_name(n) for n in self.candidates() if self.keys.key_for(n) is not None]
