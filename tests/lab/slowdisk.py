"""The real ``bootstrapd`` on a slow disk, for lab tests: reads and fsyncs of chosen files wait on a file lock.

    SLOWDISK_DIRS=/srv/root/slow:/srv/root/uploads SLOWDISK_LOCK=/tmp/lock python -m tests.lab.slowdisk run ...

(``python -m tests.lab.slowdisk worker FD`` is a TFTP transfer worker of such a daemon, on the same slow disk.)

Every ``os.read``/``os.pread``/``os.sendfile`` of a file and every ``os.fsync`` whose path (the descriptor's, from
/proc) lies under one of ``SLOWDISK_DIRS`` first takes a shared ``flock`` on ``SLOWDISK_LOCK``: while the test holds
that lock exclusively, the call blocks exactly as it would on a disk or network mount that stopped answering,
wherever in the daemon it is made. Before blocking it appends ``read`` or ``fsync`` and a newline to
``SLOWDISK_LOCK.waiting``, so the test knows the daemon has reached it. A read that asks not to wait (``os.preadv``
with ``RWF_NOWAIT``, which the kernel answers only from its page cache) fails with EAGAIN meanwhile, as it would for
data not in memory. Nothing else changes: the daemon's own code runs unmodified (no FUSE, no mocked resolver), and
files outside those folders are not touched.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem, WriteableBuffer


class HasFileno(Protocol):
    def fileno(self) -> int: ...

_DIRS = tuple(d.rstrip("/") + "/" for d in os.environ.get("SLOWDISK_DIRS", "").split(":") if d)
_LOCK = os.environ.get("SLOWDISK_LOCK", "")
_read, _pread, _preadv, _fsync, _sendfile = os.read, os.pread, os.preadv, os.fsync, os.sendfile


def _slow(fd: int) -> bool:
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return any(path.startswith(d) or path + "/" == d for d in _DIRS)


def _wait(what: str) -> None:
    with open(_LOCK + ".waiting", "a") as marker:
        marker.write(what + "\n")
    with open(_LOCK) as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_UN)


def _held() -> bool:
    with open(_LOCK) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def read(fd: int, n: int) -> bytes:
    if _slow(fd):
        _wait("read")
    return _read(fd, n)


def pread(fd: int, n: int, offset: int) -> bytes:
    if _slow(fd):
        _wait("read")
    return _pread(fd, n, offset)


def preadv(fd: int, buffers: SupportsLenAndGetItem[WriteableBuffer], offset: int, flags: int = 0) -> int:
    if _slow(fd):
        if flags & os.RWF_NOWAIT and _held():
            raise BlockingIOError(errno.EAGAIN, "not in the page cache (slow disk)")
        _wait("read")
    return _preadv(fd, buffers, offset, flags)


def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
    # sendfile reads the file (in the kernel) on its way to the socket: a slow disk holds it like a read.
    if _slow(in_fd):
        _wait("read")
    return _sendfile(out_fd, in_fd, offset, count)


def fsync(fd: int | HasFileno) -> None:
    if _slow(fd if isinstance(fd, int) else fd.fileno()):
        _wait("fsync")
    _fsync(fd)


def main() -> int:
    if not _DIRS or not _LOCK:
        print("tests.lab.slowdisk: set SLOWDISK_DIRS and SLOWDISK_LOCK", file=sys.stderr)
        return 2
    os.read = read
    os.pread = pread
    os.preadv = preadv
    os.fsync = fsync
    os.sendfile = sendfile
    from bootstrapd.tftp import workers

    # The daemon's TFTP transfer workers run on the same slow disk: started through this module too.
    workers.WORKER_ARGV = ["-m", "tests.lab.slowdisk", "worker"]
    if sys.argv[1:2] == ["worker"]:
        from bootstrapd.tftp.worker import main as worker

        return worker(sys.argv[1:])
    from bootstrapd.cli import main as bootstrapd

    return bootstrapd()


if __name__ == "__main__":
    sys.exit(main())
