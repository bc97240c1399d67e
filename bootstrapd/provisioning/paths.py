"""Requested names -> path components, and the one refusal type every step of serving a file raises.

:func:`normalize` is pure: ``\\`` is read as ``/`` (Windows-minded phones), a leading ``/`` means the root, ``..``,
empty components and control characters are refused. Every protocol adapter maps a :class:`Reason` to its own
answer (TFTP error code, HTTP status, FTP reply).
"""

from __future__ import annotations

import enum
import re


class Reason(enum.StrEnum):
    ESCAPE = "escape"  # '..' or a symlink leaving the root
    ABSOLUTE = "absolute"  # an absolute path outside the root
    EMPTY = "empty"  # empty name or empty component ('a//b')
    BAD_NAME = "bad_name"  # control characters, NUL, not text
    NOT_FOUND = "not_found"
    NOT_REGULAR = "not_regular"  # directory, FIFO, device, socket
    DENIED = "denied"  # the OS refused (permissions, I/O error)
    UPLOAD_DISABLED = "upload_disabled"
    TOO_LARGE = "too_large"
    EXISTS = "exists"
    AUTH_REQUIRED = "auth_required"  # an [[auth]] directory without that directory's credentials
    NOT_OWNER = "not_owner"  # a phone's own file asked for by an address that does not hold that MAC's lease
    NOT_ALLOWED = "not_allowed"  # an upload whose name matches none of the accepted patterns
    PROVISIONED = "provisioned"  # an upload of a name the administrator provisioned


class Refused(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


PATH_MAX = 4096
_BAD = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def normalize(name: str, root: str = "") -> tuple[str, ...]:
    """The components of a requested name, relative to the root; raises :class:`Refused`.

    A leading ``/`` is accepted as the root (many phones ask for ``/y000000000000.boot``); a name that spells out
    ``root`` itself is accepted too. The resolver refuses with ``ABSOLUTE`` an absolute name that is not found
    under the root, so ``/etc/passwd`` is reported as what it is.
    """
    if not name:
        raise Refused(Reason.EMPTY, "empty name")
    if len(name) > PATH_MAX:
        raise Refused(Reason.BAD_NAME, "name too long")  # no such file can exist; refused before any system call
    bad = _BAD.search(name)
    if bad is not None:
        if bad.group() >= "\ud800":
            raise Refused(Reason.BAD_NAME, "name is not valid text")  # surrogates: bytes that were not UTF-8
        raise Refused(Reason.BAD_NAME, "control character in name")
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
