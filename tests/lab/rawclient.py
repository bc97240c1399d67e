"""Hostile HTTP/FTP clients for the lab tests, run inside a phone namespace; prints one JSON report.

    python -m tests.lab.rawclient HOST PORT send HEX            bytes (hex) then read until close
    python -m tests.lab.rawclient HOST PORT dribble HEX         one byte a second; when did the server close?
    python -m tests.lab.rawclient HOST PORT hold N              open N connections at once: what did each get?
    python -m tests.lab.rawclient HOST PORT burst N HEX         N requests on one keep-alive connection: statuses
    python -m tests.lab.rawclient HOST PORT ftp LINE...         an FTP session: the reply to each line
    python -m tests.lab.rawclient HOST PORT talk S HEX...       each chunk (0.1 s apart), then read until the server
                                                                closes or S seconds pass: every byte that came
    python -m tests.lab.rawclient HOST PORT stall HEX S [tls]   send a request, read nothing for S seconds, then
                                                                read: how much came, and did the server close?
    python -m tests.lab.rawclient HOST PORT fetch HEX B S       a receive buffer of B bytes (0: the default), the
                                                                request, S seconds of not reading, then read: every
                                                                byte, and did it end with a FIN or a reset?
    python -m tests.lab.rawclient HOST PORT hold N [HEX]        as hold, each connection first sending HEX
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import time
from typing import Any

WAIT = 30.0


def _connect(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect((host, port))
    return sock


def _read_all(sock: socket.socket, limit: float = WAIT) -> tuple[bytes, bool]:
    """What arrives until the server closes (True) or ``limit`` passes (False)."""
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _status(data: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else 0


def send(host: str, port: int, payload: bytes) -> dict[str, Any]:
    sock = _connect(host, port)
    try:
        sock.sendall(payload)
    except OSError as exc:
        return {"status": 0, "closed": True, "error": str(exc)}
    data, closed = _read_all(sock, 10.0)
    sock.close()
    return {"status": _status(data), "closed": closed, "head": data[:300].decode("latin-1")}


def dribble(host: str, port: int, payload: bytes) -> dict[str, Any]:
    sock = _connect(host, port)
    start = time.monotonic()
    sent = 0
    for byte in payload:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sent += 1
        sock.settimeout(1.0)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        if chunk:
            return {"closed": False, "sent": sent, "answer": chunk[:100].decode("latin-1")}
    data, _ = _read_all(sock, 2.0)
    return {"closed": True, "sent": sent, "of": len(payload), "seconds": round(time.monotonic() - start, 1),
            "answer": data[:100].decode("latin-1")}


def hold(host: str, port: int, count: int, prefix: bytes = b"") -> dict[str, Any]:
    """Open ``count`` connections one after the other, each sending ``prefix`` (the start of a request: a server
    that defers accepting until data comes takes it at once); what each has received (None: nothing, still open)."""
    socks = []
    for _ in range(count):
        socks.append(_connect(host, port))
        if prefix:
            socks[-1].sendall(prefix)
        time.sleep(0.02)
    time.sleep(0.5)
    statuses: list[Any] = []
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            statuses.append(None)
            continue
        except OSError:
            data = b""
        statuses.append(_status(data) if data else "closed")
    for sock in socks:
        sock.close()
    return {"statuses": statuses}


def burst(host: str, port: int, count: int, payload: bytes) -> dict[str, Any]:
    statuses = []
    sock = _connect(host, port)
    buffer = b""
    for _ in range(count):
        try:
            sock.sendall(payload)
        except OSError:
            sock = _connect(host, port)
            sock.sendall(payload)
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
        length = int(match.group(1)) if match else 0
        while len(rest) < length:
            rest += sock.recv(65536)
        buffer = rest[length:]
        statuses.append(_status(head))
        if b"connection: close" in head.lower():
            sock.close()
            sock = _connect(host, port)
            buffer = b""
    return {"statuses": statuses}


def talk(host: str, port: int, seconds: float, chunks: list[bytes]) -> dict[str, Any]:
    sock = _connect(host, port)
    for i, chunk in enumerate(chunks):
        if i:
            time.sleep(0.1)
        try:
            sock.sendall(chunk)
        except OSError as exc:
            return {"data": "", "closed": True, "error": str(exc)}
    data, closed = _read_all(sock, seconds)
    sock.close()
    return {"data": data.hex(), "closed": closed}


def ftp(host: str, port: int, lines: list[str]) -> dict[str, Any]:
    sock = _connect(host, port)
    replies = [_ftp_reply(sock)]
    for line in lines:
        try:
            sock.sendall(line.encode("latin-1", "replace") + b"\r\n")
        except OSError:
            replies.append("closed")
            break
        replies.append(_ftp_reply(sock))
    sock.close()
    return {"replies": replies}


def stall(host: str, port: int, payload: bytes, seconds: float, tls: bool) -> dict[str, Any]:
    """A client that stops reading: a small receive buffer, the request, ``seconds`` of not reading, then what
    arrives until the server's close (or a reset: what the server aborted, unread, counts as closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect((host, port))
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    sock.sendall(payload)
    time.sleep(seconds)
    try:
        data, closed = _read_all(sock, WAIT)
    except (ssl.SSLError, OSError):
        data, closed = b"", True
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return {"status": _status(head), "closed": closed, "length": int(match.group(1)) if match else None,
            "received": len(body)}


def fetch(host: str, port: int, payload: bytes, rcvbuf: int, seconds: float) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(WAIT)
    sock.connect((host, port))
    sock.sendall(payload)
    time.sleep(seconds)
    data = b""
    end = "timeout"
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            end = "reset"
            break
        if not chunk:
            end = "fin"
            break
        data += chunk
    sock.close()
    return {"data": data.hex(), "end": end}


def _ftp_reply(sock: socket.socket) -> str:
    data = b""
    sock.settimeout(10.0)
    while True:
        try:
            chunk = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            return data.decode("latin-1") or "timeout"
        if not chunk:
            return data.decode("latin-1") or "closed"
        data += chunk
        lines = data.decode("latin-1").split("\r\n")
        complete = [ln for ln in lines[:-1] if re.match(r"\d{3} ", ln)]
        if complete:
            return data.decode("latin-1")


def main(argv: list[str]) -> None:
    host, port, mode = argv[0], int(argv[1]), argv[2]
    argv = [sys.stdin.read().strip() if a == "-" else a for a in argv]  # long payloads come on stdin
    if mode == "send":
        report = send(host, port, bytes.fromhex(argv[3]))
    elif mode == "dribble":
        report = dribble(host, port, bytes.fromhex(argv[3]))
    elif mode == "hold":
        report = hold(host, port, int(argv[3]), bytes.fromhex(argv[4]) if len(argv) > 4 else b"")
    elif mode == "burst":
        report = burst(host, port, int(argv[3]), bytes.fromhex(argv[4]))
    elif mode == "talk":
        report = talk(host, port, float(argv[3]), [bytes.fromhex(a) for a in argv[4:]])
    elif mode == "ftp":
        report = ftp(host, port, argv[3:])
    elif mode == "fetch":
        report = fetch(host, port, bytes.fromhex(argv[3]), int(argv[4]), float(argv[5]))
    elif mode == "stall":
        report = stall(host, port, bytes.fromhex(argv[3]), float(argv[4]), argv[5:] == ["tls"])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
