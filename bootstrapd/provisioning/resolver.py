"""The one place that maps a requested path to a file of the provisioning tree (TFTP now, HTTP later).

Three parts:

- :func:`normalize` (pure): a requested name -> path components, or a :class:`Refused` with its :class:`Reason`.
  ``\\`` is read as ``/`` (Windows-minded phones), a leading ``/`` means the root, ``..``, empty components and
  control characters are refused.
- :class:`Resolver`: the filesystem side. It resolves symlinks and refuses anything whose real path leaves the root,
  opens without following a last-moment symlink and without blocking on a FIFO, and refuses non-regular files.
- :class:`HotCache`: file bytes kept in memory, shared by every transfer, so a boot storm of 1,000 phones reads each
  configuration once. An entry is valid while the file's (st_mtime_ns, st_size, st_ino) is unchanged; files above
  ``file_max`` are streamed from their descriptor instead.

Uploads (:meth:`Resolver.store_upload`) write only inside the upload folder, to a temporary file that is fsynced and
renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


class Reason(enum.StrEnum):
    ESCAPE = "escape"  # '..' or a symlink leaving the root
    ABSOLUTE = "absolute"  # an absolute path outside the root
    EMPTY = "empty"  # empty name or empty component ('a//b')
    BAD_NAME = "bad_name"  # control characters, NUL, not text
    NOT_FOUND = "not_found"
    NOT_REGULAR = "not_regular"  # directory, FIFO, device, socket
    DENIED = "denied"  # the OS refused (permissions)
    UPLOAD_DISABLED = "upload_disabled"
    TOO_LARGE = "too_large"
    EXISTS = "exists"


class Refused(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


PATH_MAX = 4096


def normalize(name: str, root: str = "") -> tuple[str, ...]:
    """The components of a requested name, relative to the root; raises :class:`Refused`.

    A leading ``/`` is accepted as the root (many phones ask for ``/y000000000000.boot``); a name that spells out
    ``root`` itself is accepted too. :class:`Resolver` refuses with ``ABSOLUTE`` an absolute name that is not found
    under the root, so ``/etc/passwd`` is reported as what it is.
    """
    if not name:
        raise Refused(Reason.EMPTY, "empty name")
    if len(name) > PATH_MAX:
        raise Refused(Reason.BAD_NAME, "name too long")  # no such file can exist; refused before any system call
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise Refused(Reason.BAD_NAME, "control character in name")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise Refused(Reason.BAD_NAME, "name is not valid text")
    path = name.replace("\\", "/")
    if path.startswith("/"):
        rooted = root.rstrip("/") + "/"
        if root and path.startswith(rooted):
            path = path[len(rooted):]
        else:
            path = path.lstrip("/")
    parts = tuple(path.split("/"))
    for part in parts:
        if part == "..":
            raise Refused(Reason.ESCAPE, "'..' in name")
        if part == "" or part == ".":
            raise Refused(Reason.EMPTY, "empty component in name")
    return parts


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class Opened:
    """An opened provisioning file: its bytes when they are held in memory, else a descriptor to stream from."""

    path: str
    size: int
    data: bytes | None
    fd: int | None

    def reader(self) -> Reader:
        return Reader(self)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


READ_AHEAD = 256 << 10


class Reader:
    """Sequential reads of an :class:`Opened` file: memoryview slices of cached bytes, or ``os.read`` calls."""

    def __init__(self, opened: Opened) -> None:
        self.opened = opened
        self.size: int | None = opened.size
        self._view = memoryview(opened.data) if opened.data is not None else None
        self._offset = 0
        self._buf = b""

    def read(self, n: int) -> bytes | memoryview:
        if self._view is not None:
            chunk = self._view[self._offset:self._offset + n]
            self._offset += len(chunk)
            return chunk
        # Streamed: read ahead in large chunks, one system call per READ_AHEAD bytes instead of one per block.
        if self._offset + n > len(self._buf):
            assert self.opened.fd is not None
            rest = self._buf[self._offset:]
            want = max(n, READ_AHEAD) - len(rest)
            chunks = [rest]
            while want > 0:
                more = os.read(self.opened.fd, want)
                if not more:
                    break
                chunks.append(more)
                want -= len(more)
            self._buf = b"".join(chunks)
            self._offset = 0
        chunk = memoryview(self._buf)[self._offset:self._offset + n]
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        self.opened.close()


class HotCache:
    """File contents by real path, LRU, bounded in total bytes; stale entries are replaced on the next open.

    Safe to use from worker threads: a cache miss is read (and put here) off the event loop while the loop serves
    hits."""

    def __init__(self, max_bytes: int, file_max: int) -> None:
        self.max_bytes = max_bytes
        self.file_max = min(file_max, max_bytes)
        self.total = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def identity(st: os.stat_result) -> tuple[int, int, int]:
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def get(self, path: str, st: os.stat_result) -> bytes | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                self.misses += 1
                return None
            if entry[0] != self.identity(st):
                self.misses += 1
                self._drop(path)
                return None
            self.hits += 1
            self._entries.move_to_end(path)
            return entry[1]

    def put(self, path: str, st: os.stat_result, data: bytes) -> None:
        if len(data) > self.file_max:
            return
        with self._lock:
            self._drop(path)
            while self._entries and self.total + len(data) > self.max_bytes:
                _, (_, old) = self._entries.popitem(last=False)
                self.total -= len(old)
            self._entries[path] = (self.identity(st), data)
            self.total += len(data)

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None:
            self.total -= len(entry[1])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.total = 0


# What an uploaded file costs the upload folder at least: empty files take no bytes but an inode and a directory
# entry each, and would otherwise be free to create without end.
FILE_COST = 4096


def _upload_cost(path: str) -> int:
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    return max(st.st_size, FILE_COST) if stat.S_ISREG(st.st_mode) else 0


def _tree_size(folder: str | None) -> int:
    total = 0
    for parent, dirs, files in os.walk(folder or ""):
        total += FILE_COST * len(dirs) + sum(_upload_cost(os.path.join(parent, name)) for name in files)
    return total


def _fd_path(fd: int, fallback: str) -> str:
    """The path an open descriptor refers to (Linux /proc); ``fallback`` where /proc is not mounted."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return fallback


_NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux 4.14+


def read_nowait(fd: int, size: int, offset: int) -> bytes | None:
    """Up to ``size`` bytes at ``offset`` if the kernel has them in memory (page cache), else None, never waiting for
    the disk (``preadv2`` with ``RWF_NOWAIT``). Fewer bytes than asked when only part is in memory; ``b""`` at the
    end of the file. None also where the kernel or file system cannot tell (then a worker thread reads)."""
    global _NOWAIT
    if not _NOWAIT:
        return None
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], offset, _NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
            _NOWAIT = 0  # not here (or denied by a seccomp filter): every read goes to a worker thread
            return None
        raise
    return bytes(buf) if got == size else bytes(memoryview(buf)[:got])


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Resolver:
    def __init__(self, root: str | Path, cache_size: int = 64 << 20, stream_above: int = 1 << 20,
                 upload_dir: str | Path | None = None, upload_max_size: int = 1 << 20,
                 upload_dir_max_size: int = 0) -> None:
        self.root = os.path.realpath(root)
        self.cache = HotCache(cache_size, stream_above)
        self.upload_max_size = upload_max_size
        self.upload_dir_max_size = upload_dir_max_size  # 0: no cap on the folder's total
        self._upload_used: int | None = None  # bytes in the upload folder, counted on first need
        self.upload_dir: str | None = None
        if upload_dir:
            folder = Path(upload_dir)
            self.upload_dir = os.path.realpath(folder if folder.is_absolute() else Path(self.root) / folder)
            if inside(self.root, self.upload_dir):
                # An upload folder that is (or holds) the root would let phones replace provisioned files.
                raise ValueError(f"upload folder {self.upload_dir} must not be or contain the root {self.root}")

    def resolve(self, name: str) -> str:
        """The real path of ``name`` inside the root; raises :class:`Refused`."""
        parts = normalize(name, self.root)
        candidate = os.path.join(self.root, *parts)
        real = os.path.realpath(candidate)
        if not inside(real, self.root):
            raise Refused(Reason.ESCAPE, "resolves outside the root")
        if not os.path.lexists(candidate):
            if name.replace("\\", "/").startswith("/"):
                raise Refused(Reason.ABSOLUTE, "absolute path outside the root")
            raise Refused(Reason.NOT_FOUND, name)
        return real

    def open(self, name: str) -> Opened:
        """The file, read into the cache if it belongs there (blocking: call it off the event loop on a miss)."""
        opened = self._open(name, wait=True)
        assert opened is not None
        return opened

    def open_nowait(self, name: str) -> Opened | None:
        """The file without waiting for the disk: cached bytes, a small file the kernel has in memory (read and
        cached now), or a descriptor to stream a large file from; None when the file's data would have to come
        from the disk (then call :meth:`open`, off the event loop). The metadata calls (realpath, open, fstat) are
        answered from the kernel's caches."""
        return self._open(name, wait=False)

    def _open(self, name: str, wait: bool) -> Opened | None:
        real = self.resolve(name)
        try:
            # O_NOFOLLOW: a symlink swapped in after resolve() is refused; O_NONBLOCK: a FIFO cannot block us.
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Refused(Reason.NOT_FOUND, name) from None
        except PermissionError:
            raise Refused(Reason.DENIED, name) from None
        except OSError as exc:
            odd = exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR)
            raise Refused(Reason.NOT_REGULAR if odd else Reason.DENIED, name) from None
        try:
            # O_NOFOLLOW guards the last component only: a directory on the way swapped for a symlink after
            # resolve() would still be followed. Check where the descriptor really points.
            if not inside(_fd_path(fd, real), self.root):
                raise Refused(Reason.ESCAPE, "resolves outside the root")
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(Reason.NOT_REGULAR, name)
            data = self.cache.get(real, st)
            if data is not None:
                os.close(fd)
                return Opened(real, len(data), data, None)
            if st.st_size <= self.cache.file_max:
                if wait:
                    data = _read_all(fd, st.st_size)
                else:
                    data = read_nowait(fd, st.st_size, 0)
                    if data is None or len(data) < st.st_size:
                        os.close(fd)
                        return None  # not (all) in the page cache: to be read by open(), off the event loop
                os.close(fd)
                if len(data) == st.st_size:
                    self.cache.put(real, st, data)
                return Opened(real, len(data), data, None)
            return Opened(real, st.st_size, None, fd)
        except BaseException as exc:
            try:
                os.close(fd)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise Refused(Reason.DENIED, f"{name}: {exc.strerror or exc}") from None  # EIO and the like
            raise

    def upload_target(self, name: str) -> str:
        """Where an upload of ``name`` would be written; raises :class:`Refused`."""
        if self.upload_dir is None:
            raise Refused(Reason.UPLOAD_DISABLED, "uploads are disabled")
        parts = normalize(name)
        target = os.path.join(self.upload_dir, *parts)
        parent = os.path.realpath(os.path.dirname(target))
        if not inside(parent, self.upload_dir):
            raise Refused(Reason.ESCAPE, "resolves outside the upload folder")
        target = os.path.join(parent, parts[-1])
        if os.path.lexists(target):
            st = os.lstat(target)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(Reason.EXISTS, "exists and is not a regular file")
        return target

    def store_upload(self, name: str, data: bytes) -> str:
        """Write an upload atomically (temp file, fsync, rename); returns its path."""
        if len(data) > self.upload_max_size:
            raise Refused(Reason.TOO_LARGE, f"{len(data)} bytes > {self.upload_max_size}")
        target = self.upload_target(name)
        growth = max(len(data), FILE_COST) - _upload_cost(target)
        if self.upload_dir_max_size:
            # Every upload is capped, but distinct names could still fill the disk. The folder's total is counted
            # once and then kept up to date; it is counted again before refusing, to see files removed meanwhile.
            if self._upload_used is None or self._upload_used + growth > self.upload_dir_max_size:
                self._upload_used = _tree_size(self.upload_dir)
            if self._upload_used + growth > self.upload_dir_max_size:
                raise Refused(Reason.TOO_LARGE, "the upload folder is full")
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}.{id(data):x}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, target)
        if self._upload_used is not None:
            self._upload_used += growth
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target
