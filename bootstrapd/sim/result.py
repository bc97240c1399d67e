"""The result of one transfer a simulated phone made, whatever the scheme (TFTP, HTTP(S), FTP)."""

from __future__ import annotations

from dataclasses import dataclass

# What a status means to the phone: only "ok" is a file; "not-found" is a definite answer (the model decides
# whether that file was needed); the others say the server or the network failed the phone.
OK, NOT_FOUND, REFUSED, AUTH, TIMEOUT, ERROR = "ok", "not-found", "refused", "auth", "timeout", "error"
DEFINITE = (OK, NOT_FOUND)


@dataclass
class Result:
    data: bytes | None  # the file (b"" for a finished upload), None when the transfer did not succeed
    status: str  # OK, NOT_FOUND (TFTP ERROR 1, HTTP 404, FTP 550), REFUSED (TFTP ERROR 2, HTTP 403), AUTH (HTTP
    # 401, FTP 530), TIMEOUT (no answer after the phone's retries), ERROR (anything else)
    detail: str = ""  # e.g. "TFTP error 1: File not found", "HTTP 401 Unauthorized"
    retries: int = 0  # packets (or requests) sent again after a timeout
