"""The one place that decides what a requested name means and whether it may be served, for TFTP, HTTP and FTP.

The pipeline (DESIGN "Serving a file"), each step a plain function or object with no protocol in it::

    name, client address, user  -> normalize      (paths.py: components, or Refused)
                                -> access rules   (access.py: [[auth]] directories, a MAC file only to its owner)
                                -> source         uploads (uploads.py) > overlays (sources.py) > static tree
                                -> transforms     (sources.py; Yealink AES from the provisioning model)
                                -> Opened         bytes or a descriptor, with size, mtime, ETag, origin, MAC

The static tree: symlinks are resolved and anything whose real path leaves the root is refused; files are opened
without following a last-moment symlink and without blocking on a FIFO, and the opened descriptor's own path is
checked again (a directory swapped for a symlink on the way). MAC file names (``<mac>.cfg`` …) match
case-insensitively. Small files come from :class:`HotCache`; files of ``stream_above`` bytes or more are streamed
from their descriptor and never pass through transforms.

Waiting for the disk: :meth:`Resolver.open` reads a small file that is not in the hot cache (blocking: a worker
thread's call); :meth:`Resolver.open_nowait` is the same pipeline for the event loop, which answers only what the
kernel holds in memory (metadata, the page cache through ``preadv(RWF_NOWAIT)``) and returns None where the
file's bytes would have to come from the disk. :mod:`bootstrapd.provisioning.work` puts the two together for the
file services. Overlays hold their files in memory and transforms work on bytes in memory, so both run on either
path.

ETags are stable across restarts: a hash of the bytes sent for files held in memory, ``mtime-size`` for streamed
ones. Every method may be called from a worker thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrapd.provisioning.access import AccessRules
from bootstrapd.provisioning.cache import Cached, HotCache
from bootstrapd.provisioning.macfiles import canonical, owner_mac
from bootstrapd.provisioning.paths import PATH_MAX, Reason, Refused, inside, normalize
from bootstrapd.provisioning.sources import Content, Overlay, Transform
from bootstrapd.provisioning.uploads import UploadName, UploadStore

__all__ = ["PATH_MAX", "Entry", "HotCache", "Opened", "Reader", "Reason", "Refused", "Resolver", "inside",
           "normalize"]


def etag_of(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'


def etag_of_stat(st: os.stat_result) -> str:
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


@dataclass
class Opened:
    """A file ready to send: its bytes when held in memory, else a descriptor to stream from."""

    path: str  # the real path, or "overlay:<name>"
    size: int
    data: bytes | None
    fd: int | None
    mtime: float = 0.0
    etag: str = ""
    origin: str = "static"  # "static", "upload", or the overlay's Content.origin
    mac: str | None = None  # the phone a MAC file belongs to
    name: str = ""  # the normalized relative name

    def reader(self) -> Reader:
        return Reader(self)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        # A response dropped before it was sent (the client went away) must not leak its descriptor.
        self.close()


READ_AHEAD = 256 << 10
NAMES_KEPT = 4096  # requested names remembered by the resolver (Resolver._name)


class Reader:
    """Sequential reads of an :class:`Opened` file: memoryview slices of bytes in memory, or blocking reads of a
    descriptor (``check``, ``explain``; the file services read descriptors through
    :mod:`bootstrapd.provisioning.work` instead)."""

    def __init__(self, opened: Opened) -> None:
        self.opened = opened
        self.size: int | None = opened.size
        self._view = memoryview(opened.data) if opened.data is not None else None
        self._offset = 0
        self._buf = b""
        self._pos = 0  # in the file

    def read(self, n: int) -> bytes | memoryview:
        if self._view is not None:
            chunk = self._view[self._offset:self._offset + n]
            self._offset += len(chunk)
            return chunk
        # Streamed: read ahead in large chunks, one system call per READ_AHEAD bytes instead of one per block.
        if self._offset + n > len(self._buf):
            assert self.opened.fd is not None
            rest = self._buf[self._offset:]
            more = read_chunk(self.opened.fd, max(n, READ_AHEAD) - len(rest), self._pos)
            self._pos += len(more)
            self._buf = rest + more
            self._offset = 0
        chunk = memoryview(self._buf)[self._offset:self._offset + n]
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        self.opened.close()


@dataclass(frozen=True)
class Entry:
    """One name of a directory listing (FTP)."""

    name: str
    is_dir: bool
    size: int
    mtime: float


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
    buf = bytearray(size)
    got = readinto_nowait(fd, buf, offset)
    if got is None:
        return None
    return bytes(buf) if got == size else bytes(memoryview(buf)[:got])


def readinto_nowait(fd: int, buf: bytearray | memoryview, offset: int) -> int | None:
    """:func:`read_nowait` into the caller's buffer (one it reuses: no allocation, no copy): the number of bytes
    read, 0 at the end of the file, None when the data is not in memory."""
    global _NOWAIT
    if not _NOWAIT:
        return None
    try:
        return os.preadv(fd, [buf], offset, _NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
            _NOWAIT = 0  # not here (or denied by a seccomp filter): every read goes to a worker thread
            return None
        raise


def read_chunk(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, waiting for the disk (fewer only at the end of the file): in a worker thread,
    or where blocking is fine (``check``, ``explain``)."""
    chunks = []
    want = size
    while want > 0:
        more = os.pread(fd, want, offset)
        if not more:
            break
        chunks.append(more)
        want -= len(more)
        offset += len(more)
    return b"".join(chunks)


class Resolver:
    def __init__(self, root: str | Path, cache_size: int = 64 << 20, stream_above: int = 1 << 20, *,
                 access: AccessRules | None = None, uploads: UploadStore | None = None,
                 overlays: Sequence[Overlay] = (), transforms: Sequence[Transform] = (),
                 hidden: tuple[str, ...] = ()) -> None:
        self.root = os.path.realpath(root)
        self.cache = HotCache(cache_size, stream_above)
        self.stream_above = stream_above  # files of this size or more are streamed from their descriptor
        self.access = access or AccessRules()
        self.uploads = uploads
        self.overlays = tuple(overlays)
        self.transforms = tuple(transforms)
        self.hidden = hidden  # name endings never served nor listed (template sources: what they render is)
        if uploads is not None and (inside(uploads.folder, self.root) or inside(self.root, uploads.folder)):
            # An upload store inside the tree would be served as static files to anyone; one holding the tree
            # would let phones write over provisioned files.
            raise ValueError(f"the upload folder {uploads.folder} must lie outside the root {self.root}")
        self._dirs: dict[str, tuple[int, dict[str, str]]] = {}  # folder -> (mtime_ns, lower-case name -> name)
        self._dirs_lock = threading.Lock()
        self._hot: dict[str, tuple[str, str, int, int]] = {}  # name -> (path, real path, st_dev, st_ino) vetted
        self._names: dict[str, tuple[tuple[str, ...], UploadName | None, str]] = {}  # see _name

    # -- the pipeline ---------------------------------------------------------------------------------------

    def open(self, name: str, client: str | None = None, user: str | None = None) -> Opened:
        """The file a request for ``name`` gets; raises :class:`Refused`. ``user`` must already be verified.
        Blocks while a small file is read from the disk: on the event loop, use :meth:`open_nowait`."""
        opened = self._open(name, client, user, wait=True)
        assert opened is not None
        return opened

    def open_nowait(self, name: str, client: str | None = None, user: str | None = None) -> Opened | None:
        """:meth:`open` without waiting for the disk: None when the file's bytes are in neither the hot cache nor
        the kernel's page cache (then :meth:`open` it in a worker thread, which puts it in the cache). Every rule
        is applied before that, so a refusal is raised here, at once. Large files are descriptors either way."""
        return self._open(name, client, user, wait=False)

    def _name(self, name: str) -> tuple[tuple[str, ...], UploadName | None, str]:
        """What a requested name is, before any rule that depends on who asks: its components, the upload name it
        matches, its canonical key; raises :class:`Refused`. Remembered per name (bounded; refusals are not): it
        depends on the name and this resolver's settings only, and a boot storm asks for a few names all along."""
        known = self._names.get(name)
        if known is None:
            parts = normalize(name, self.root)
            upload = self.uploads.match(parts[-1]) if self.uploads is not None else None
            known = (parts, upload, "/".join(canonical(parts)))
            if len(self._names) >= NAMES_KEPT:  # names from the wire: a scan of random names clears it
                self._names.clear()
            self._names[name] = known
        if self.hidden and known[0][-1].endswith(self.hidden):  # each time: plug() sets it after the resolver's birth
            raise Refused(Reason.NOT_FOUND, name)
        return known

    def _open(self, name: str, client: str | None, user: str | None, wait: bool) -> Opened | None:
        parts, upload, key = self._name(name)
        mac = self.access.check(parts, client, user, upload.mac if upload else None)
        if upload is not None and self.uploads is not None:
            found = self.uploads.find(parts[-1])
            if found is not None:
                opened = self._open_file(found[1], name, self.uploads.folder, transform=False, wait=wait)
                if opened is None:
                    return None
                opened.origin, opened.mac, opened.name = "upload", mac, key
                return opened
        for overlay in self.overlays:
            content = overlay.get(key)
            if content is not None:
                return self._content(key, content, mac)
        hot = self._hot_static(key)
        if hot is not None:
            hot.mac, hot.name = mac, key
            return hot
        candidate, real = self._static(parts, name)
        opened = self._open_file(real, key, self.root, transform=True, wait=wait)
        if opened is None:
            return None
        if opened.data is not None:
            self._remember(key, candidate, real)
        opened.mac, opened.name = mac, key
        return opened

    def _hot_static(self, key: str) -> Opened | None:
        """A small static file vetted before, unchanged: one stat() instead of resolving every component again.

        The name is stat()ed as asked (symlinks followed by the kernel); only when it still leads to the very
        inode vetted last time, with the same size and mtime, are the cached bytes served. A symlink re-pointed
        or swapped in meanwhile leads elsewhere and takes the full path (and its refusals).
        """
        hot = self._hot.get(key)
        if hot is None:
            return None
        candidate, real, device, inode = hot
        try:
            st = os.stat(candidate)
        except OSError:
            return None
        if (st.st_dev, st.st_ino) != (device, inode):
            return None
        cached = self.cache.get(real, st)
        if cached is None:
            return None
        data = self._transform(key, cached.data) if self.transforms else cached.data
        return Opened(real, len(data), data, None, st.st_mtime, cached.etag if data is cached.data else etag_of(data))

    def _remember(self, key: str, candidate: str, real: str) -> None:
        try:
            st = os.stat(real)
        except OSError:
            return
        if len(self._hot) >= 65536:
            self._hot.clear()
        self._hot[key] = (candidate, real, st.st_dev, st.st_ino)

    def needs_auth(self, name: str) -> bool:
        """Whether ``name`` lies in an [[auth]] folder (so the adapter verifies credentials at all)."""
        if not self.access.auth:
            return False
        try:
            parts = normalize(name, self.root)
        except Refused:
            return False
        return self.access.auth.protects(parts)

    def _content(self, key: str, content: Content, mac: str | None) -> Opened:
        data = self._transform(key, content.data)
        return Opened(f"overlay:{key}", len(data), data, None, content.mtime, etag_of(data), content.origin, mac,
                      key)

    def _transform(self, key: str, data: bytes) -> bytes:
        for transform in self.transforms:
            data = transform.apply(key, data)
        return data

    def _static(self, parts: tuple[str, ...], name: str) -> tuple[str, str]:
        """The path and real path of a static file inside the root; raises :class:`Refused`."""
        candidate = os.path.join(self.root, *parts)
        if not os.path.lexists(candidate) and owner_mac(parts[-1]) is not None:
            candidate = self._case_insensitive(parts) or candidate
        real = os.path.realpath(candidate)
        if not inside(real, self.root):
            raise Refused(Reason.ESCAPE, "resolves outside the root")
        if not os.path.lexists(candidate):
            if name.replace("\\", "/").startswith("/"):
                # HTTP and FTP pass names relative to the root; a TFTP name that starts with "/" and is not found
                # under the root is reported as what it is (/etc/passwd).
                raise Refused(Reason.ABSOLUTE, "absolute path outside the root")
            raise Refused(Reason.NOT_FOUND, name)
        return candidate, real

    def _case_insensitive(self, parts: tuple[str, ...]) -> str | None:
        """A MAC file saved in another case (``00156574B150.cfg`` for ``00156574b150.cfg``)."""
        folder = os.path.realpath(os.path.join(self.root, *parts[:-1]))
        if not inside(folder, self.root):
            return None
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return None
        with self._dirs_lock:
            known = self._dirs.get(folder)
        if known is None or known[0] != mtime:
            # Listed again only when the folder changed: a boot storm of phones asking for <mac>.boot files that
            # do not exist costs one stat each, not one listing each.
            try:
                names = sorted(os.listdir(folder), reverse=True)
            except OSError:
                return None
            known = (mtime, {n.lower(): n for n in names})
            with self._dirs_lock:
                self._dirs[folder] = known
                if len(self._dirs) > 4096:
                    self._dirs.clear()
        actual = known[1].get(parts[-1].lower())
        return os.path.join(folder, actual) if actual else None

    def _open_file(self, real: str, name: str, within: str, transform: bool, wait: bool) -> Opened | None:
        try:
            # O_NOFOLLOW: a symlink swapped in after resolving is refused; O_NONBLOCK: a FIFO cannot block us.
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
            # resolving would still be followed. Check where the descriptor really points.
            if not inside(_fd_path(fd, real), within):
                raise Refused(Reason.ESCAPE, "resolves outside the root")
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(Reason.NOT_REGULAR, name)
            cached = self.cache.get(real, st)
            if cached is None and (st.st_size < self.stream_above or st.st_size <= self.cache.file_max):
                if wait:
                    data = read_chunk(fd, st.st_size, 0)
                else:
                    got = read_nowait(fd, st.st_size, 0) if st.st_size else b""
                    if got is None or len(got) < st.st_size:
                        os.close(fd)
                        return None  # not (all) in the page cache: open() reads it, off the event loop
                    data = got
                cached = Cached(data, etag_of(data))
                if len(data) == st.st_size:
                    self.cache.put(real, st, cached)
            if cached is None:
                return Opened(real, st.st_size, None, fd, st.st_mtime, etag_of_stat(st))
            os.close(fd)
            data = self._transform(name, cached.data) if transform and self.transforms else cached.data
            etag = cached.etag if data is cached.data else etag_of(data)
            return Opened(real, len(data), data, None, st.st_mtime, etag)
        except BaseException as exc:
            try:
                os.close(fd)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise Refused(Reason.DENIED, f"{name}: {exc.strerror or exc}") from None  # EIO and the like
            raise

    # -- uploads --------------------------------------------------------------------------------------------

    def upload_name(self, name: str, client: str | None = None, user: str | None = None) -> UploadName:
        """Where an upload of ``name`` would go, after every rule; raises :class:`Refused`. Writes nothing."""
        if self.uploads is None:
            raise Refused(Reason.UPLOAD_DISABLED, "uploads are disabled")
        parts = normalize(name, self.root)
        target = self.uploads.accept(parts[-1])
        self.access.check(parts, client, user, target.mac)
        if self._provisioned(parts):
            raise Refused(Reason.PROVISIONED, f"{name} is provisioned; an upload never replaces it")
        return target

    def _provisioned(self, parts: tuple[str, ...]) -> bool:
        key = "/".join(canonical(parts))
        if any(overlay.get(key) is not None for overlay in self.overlays):
            return True
        candidate = os.path.join(self.root, *parts)
        return os.path.lexists(candidate) or self._case_insensitive(parts) is not None

    def upload_target(self, name: str, client: str | None = None, user: str | None = None) -> str:
        """The path an upload of ``name`` would be written to; raises :class:`Refused`."""
        target = self.upload_name(name, client, user)
        assert self.uploads is not None
        return self.uploads.path(target)

    def store_upload(self, name: str, data: bytes, client: str | None = None, user: str | None = None) -> str:
        """Check every rule again and store ``data`` atomically; returns its path. Blocks on fsync."""
        target = self.upload_name(name, client, user)
        assert self.uploads is not None
        return self.uploads.store(target, data)

    # -- folders (FTP) --------------------------------------------------------------------------------------

    def directory(self, name: str, user: str | None = None) -> tuple[str, ...]:
        """The components of a folder of the tree this user may enter (``/`` is ``()``); raises Refused."""
        if name.replace("\\", "/").strip("/") == "":
            return ()
        parts = normalize(name.rstrip("/") or "/", self.root)
        if not self.access.visible(parts, user):
            raise Refused(Reason.AUTH_REQUIRED, "/".join(parts))
        real = os.path.realpath(os.path.join(self.root, *parts))
        if not inside(real, self.root):
            raise Refused(Reason.ESCAPE, "resolves outside the root")
        if not os.path.isdir(real):
            raise Refused(Reason.NOT_FOUND if not os.path.lexists(real) else Reason.NOT_REGULAR, name)
        return parts

    def listing(self, parts: tuple[str, ...], client: str | None = None, user: str | None = None) -> list[Entry]:
        """What a listing of a folder shows this client: files and folders inside the root, minus [[auth]]
        folders of other users and, with the owner rule, other phones' files."""
        folder = os.path.join(self.root, *parts)
        names: dict[str, Entry] = {}
        try:
            scan = list(os.scandir(folder))
        except OSError:
            scan = []
        for item in scan:
            child = (*parts, item.name)
            if not self._may_list(child, client, user):
                continue
            try:
                real = os.path.realpath(item.path)
                st = os.stat(real)
            except OSError:
                continue
            if not inside(real, self.root) or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue
            names[item.name] = Entry(item.name, stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime)
        prefix = "/".join(parts) + "/" if parts else ""
        for overlay in self.overlays:
            for produced in _children(overlay.names(), prefix):
                if produced not in names and self._may_list((*parts, produced), client, user):
                    content = overlay.get(prefix + produced)
                    if content is not None:
                        names[produced] = Entry(produced, False, len(content.data), content.mtime)
        return [names[n] for n in sorted(names)]

    def _may_list(self, parts: tuple[str, ...], client: str | None, user: str | None) -> bool:
        if (self.hidden and parts[-1].endswith(self.hidden)) or not self.access.visible(parts, user):
            return False
        try:
            self.access.check(parts, client, user)
        except Refused:
            return False
        return True


def _children(names: Iterable[str], prefix: str) -> Iterable[str]:
    for name in names:
        if name.startswith(prefix) and "/" not in name[len(prefix):]:
            yield name[len(prefix):]
