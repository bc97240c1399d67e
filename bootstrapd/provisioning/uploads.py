"""The one upload store: what phones upload over TFTP (WRQ), HTTP (PUT/POST) and FTP (STOR).

- Only names matching ``provisioning.upload_patterns`` are accepted (default: ``{mac}-local.cfg``,
  ``{mac}-contact.xml``, ``{mac}-calllog.xml``, ``{mac}*.log``); each names the phone it belongs to.
- Files live under ``<state_dir>/uploads/<mac>/<name>`` (names in lower case), whatever directory the phone put
  them to: the store is kept per phone, and an upload is served back from any directory of the tree.
- A write goes to a temporary file that is fsynced, renamed into place, and the folder fsynced: a reader never sees
  half a file and a power cut never loses an acknowledged upload.
- Each file is capped (``upload_max_size``) and so is the whole store (``upload_total_max_size``; every file and
  folder counts at least 4 KiB, so empty files are not free).
- Thread-safe: adapters call :meth:`UploadStore.store` from a worker thread (fsync blocks).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrapd.provisioning.paths import Reason, Refused

DEFAULT_PATTERNS = ("{mac}-local.cfg", "{mac}-contact.xml", "{mac}-calllog.xml", "{mac}*.log")
FILE_COST = 4096  # what a file or folder costs the store at least: an inode and a directory entry


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``{mac}`` (12 hex digits), ``*`` and ``?`` within one name; anything else literal; case-insensitive."""
    if "/" in pattern or "\\" in pattern:
        raise ValueError(f"{pattern!r}: a pattern is a file name, without folders")
    if pattern.count("{mac}") != 1:
        raise ValueError(f"{pattern!r}: must contain {{mac}} exactly once (uploads are kept per phone)")
    out = []
    for piece in re.split(r"(\{mac\}|\*|\?)", pattern):
        out.append({"{mac}": "(?P<mac>[0-9a-f]{12})", "*": "[^/]*", "?": "[^/]"}.get(piece, re.escape(piece)))
    return re.compile("".join(out), re.IGNORECASE)


@dataclass(frozen=True)
class UploadName:
    mac: str  # 12 lower-case hex digits
    filename: str  # the last component, lower case


def _cost(path: str) -> int:
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    return max(st.st_size, FILE_COST) if stat.S_ISREG(st.st_mode) else 0


class UploadStore:
    def __init__(self, folder: str | Path, patterns: Sequence[str] = DEFAULT_PATTERNS, enabled: bool = True,
                 max_size: int = 1 << 20, total_max_size: int = 256 << 20, max_receiving: int = 16) -> None:
        self.folder = os.path.abspath(folder)
        self.patterns = [compile_pattern(p) for p in patterns]
        self.enabled = enabled
        self.max_size = max_size
        self.total_max_size = total_max_size  # 0: no cap
        self._used: int | None = None  # bytes in the store, counted on first need
        self._lock = threading.Lock()
        # HTTP and FTP uploads being received, each held in memory up to max_size until it is stored: this cap, not
        # the connection caps, bounds that memory (TFTP has its own, tftp.max_uploads).
        self.max_receiving = max_receiving
        self.receiving = 0
        # Told of every upload once it is durable (in the storing worker thread): the daemon records its metadata
        # in a store shared with other appliances (bootstrapd.daemon, issue #15).
        self.stored: Callable[[UploadName, bytes], None] | None = None

    def begin(self) -> bool:
        """Take a receiving slot (False: too many uploads at once); :meth:`end` gives it back."""
        with self._lock:
            if self.receiving >= self.max_receiving:
                return False
            self.receiving += 1
            return True

    def end(self) -> None:
        with self._lock:
            self.receiving -= 1

    def match(self, component: str) -> UploadName | None:
        for pattern in self.patterns:
            m = pattern.fullmatch(component)
            if m is not None:
                return UploadName(m.group("mac").lower(), component.lower())
        return None

    def accept(self, component: str) -> UploadName:
        """The phone and file an upload of this name goes to; raises :class:`Refused`."""
        if not self.enabled:
            raise Refused(Reason.UPLOAD_DISABLED, "uploads are disabled")
        name = self.match(component)
        if name is None:
            raise Refused(Reason.NOT_ALLOWED, f"{component}: not a name phones upload")
        return name

    def path(self, name: UploadName) -> str:
        return os.path.join(self.folder, name.mac, name.filename)

    def find(self, component: str) -> tuple[UploadName, str] | None:
        """The stored upload a request for this name is served from, if any (a regular file, never a link)."""
        name = self.match(component)
        if name is None:
            return None
        path = self.path(name)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return (name, path) if stat.S_ISREG(st.st_mode) else None

    def store(self, name: UploadName, data: bytes) -> str:
        """Write an upload atomically (temp file, fsync, rename, fsync the folder); returns its path."""
        if len(data) > self.max_size:
            raise Refused(Reason.TOO_LARGE, f"{len(data)} bytes > {self.max_size}")
        folder = os.path.join(self.folder, name.mac)
        target = os.path.join(folder, name.filename)
        with self._lock:
            growth = max(len(data), FILE_COST) - _cost(target) + (0 if os.path.isdir(folder) else FILE_COST)
            if self.total_max_size:
                # Counted once, then kept up to date; counted again before refusing, to see files removed meanwhile.
                if self._used is None or self._used + growth > self.total_max_size:
                    self._used = self._count()
                if self._used + growth > self.total_max_size:
                    raise Refused(Reason.TOO_LARGE, "the upload store is full")
            os.makedirs(folder, mode=0o750, exist_ok=True)
            if os.path.islink(folder) or not os.path.isdir(folder):
                raise Refused(Reason.ESCAPE, "the phone's upload folder is not a folder")
            if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
                raise Refused(Reason.EXISTS, "exists and is not a regular file")
            tmp = os.path.join(folder, f".{name.filename}.{os.getpid()}.{threading.get_ident():x}.part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            os.close(fd)
            os.replace(tmp, target)
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            if self._used is not None:
                self._used += growth
        if self.stored is not None:
            self.stored(name, data)
        return target

    def _count(self) -> int:
        total = 0
        for parent, dirs, files in os.walk(self.folder):
            total += FILE_COST * len(dirs) + sum(_cost(os.path.join(parent, f)) for f in files)
        return total
