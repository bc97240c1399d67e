"""aioftp's path layer, answered by the resolver: no FTP command touches the filesystem any other way.

aioftp joins a session's virtual path to the user's base path itself (``..`` stops at ``/``) and then asks its
path layer; here that layer maps the joined path to a name of the tree and asks the resolver, so symlinks, the
``[[auth]]`` folders and the MAC-file rule are the same as over TFTP and HTTP. Listings show what the client may
fetch. The layer is read-only: the FTP server sends RETR and STOR through the resolver directly.
"""

from __future__ import annotations

import io
import os
import stat as stat_module
from collections.abc import AsyncIterable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import aioftp

from bootstrapd.provisioning.paths import Refused
from bootstrapd.provisioning.resolver import Entry, Resolver


def tree_name(path: PurePosixPath | Path | str) -> str:
    """The tree name aioftp's joined "real" path stands for ("/" is the root)."""
    return "/".join(p for p in PurePosixPath(str(path)).parts if p != "/") or "/"


def _stat(entry: Entry) -> os.stat_result:
    mode = (stat_module.S_IFDIR | 0o555) if entry.is_dir else (stat_module.S_IFREG | 0o444)
    mtime = int(entry.mtime)
    return os.stat_result((mode, 0, 0, 1, 0, 0, entry.size, mtime, mtime, mtime))


class TreePathIO(aioftp.AbstractPathIO[Path]):
    """One per FTP session; ``resolver`` is a callable so a reload's new resolver is used at once."""

    resolver: Callable[[], Resolver]

    def _who(self) -> tuple[str | None, str | None]:
        connection: Any = self.connection
        if connection is None:
            return None, None
        user = connection.user.login if connection.future.user.done() else None
        return str(connection.client_host), None if user in (None, "anonymous", "ftp") else user

    def _entry(self, path: Path) -> Entry | None:
        name = tree_name(path)
        client, user = self._who()
        resolver = self.resolver()
        try:
            parts = resolver.directory(name, user)
            return Entry(parts[-1] if parts else "/", True, 0, os.stat(resolver.root + "/" + "/".join(parts)).st_mtime)
        except (Refused, OSError):
            pass
        parent, _, last = name.rpartition("/")
        try:
            folder = resolver.directory(parent or "/", user)
        except Refused:
            return None
        for entry in resolver.listing(folder, client, user):
            if entry.name == last:
                return entry
        return None

    async def exists(self, path: Path) -> bool:
        return self._entry(path) is not None

    async def is_dir(self, path: Path) -> bool:
        entry = self._entry(path)
        return entry is not None and entry.is_dir

    async def is_file(self, path: Path) -> bool:
        entry = self._entry(path)
        return entry is not None and not entry.is_dir

    async def stat(self, path: Path) -> os.stat_result:
        entry = self._entry(path)
        if entry is None:
            raise aioftp.PathIOError(reason=None)
        return _stat(entry)

    def list(self, path: Path) -> AsyncIterable[Path]:
        client, user = self._who()
        resolver = self.resolver()
        try:
            entries = resolver.listing(resolver.directory(tree_name(path), user), client, user)
        except Refused:
            entries = []
        base = PurePosixPath(str(path))

        async def listed() -> AsyncIterable[Path]:
            for entry in entries:
                yield Path(str(base / entry.name))

        return listed()

    async def mkdir(self, path: Path, *, parents: bool = False, exist_ok: bool = False) -> None:
        raise PermissionError("read-only")

    async def rmdir(self, path: Path) -> None:
        raise PermissionError("read-only")

    async def unlink(self, path: Path) -> None:
        raise PermissionError("read-only")

    async def rename(self, source: Path, destination: Path) -> Path:
        raise PermissionError("read-only")

    async def _open(self, path: Path, mode: str) -> io.BytesIO:
        raise PermissionError("files are sent by the server through the resolver")

    async def seek(self, file: io.BytesIO, offset: int, whence: int = io.SEEK_SET) -> int:
        return file.seek(offset, whence)

    async def write(self, file: io.BytesIO, data: bytes) -> int:
        raise PermissionError("read-only")

    async def read(self, file: io.BytesIO, block_size: int) -> bytes:
        return file.read(block_size)

    async def close(self, file: io.BytesIO) -> None:
        file.close()
