"""The HTTP fast path (bootstrapd/http/fast.py) against raw sockets from phone namespaces: the same answer as
aiohttp's path byte for byte (but the Date), keep-alive and pipelining, hand-over to aiohttp on the same
connection (PUT, Range, [[auth]]), a head that arrives in pieces, an oversized head, HTTP/1.0, the idle timeout."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.lab.httplab import MAC, PASSWORD, USER, V4, Env, build


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("http-fast")
    work.chmod(0o755)
    yield from build(work)


Response = tuple[str, dict[str, str], bytes]  # status line, headers (lower-case names), body


def _talk(env: Env, *requests: str | bytes, seconds: float = 3.0, node: str = "phone") -> tuple[bytes, bool]:
    chunks = [(r.encode("latin-1") if isinstance(r, str) else r).hex() for r in requests]
    report = env.raw(env.phone if node == "phone" else env.intruder, V4, 80, "talk", str(seconds), *chunks)
    return bytes.fromhex(report["data"]), bool(report["closed"])


def _responses(data: bytes, methods: list[str]) -> list[Response]:
    """The answers in ``data``, one per request method (a HEAD's and a 304's have no body)."""
    out: list[Response] = []
    for method in methods:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, (method, head, out)
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            assert key.lower() not in headers, lines  # no field twice
            headers[key.lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if method == "HEAD" or lines[0].split()[1] == "304":
            length = 0
        out.append((lines[0], headers, data[:length]))
        data = data[length:]
    assert data == b"", data[:200]
    return out


def _get(name: str, *fields: str, method: str = "GET", close: bool = True) -> str:
    extra = "".join(f"{f}\r\n" for f in fields)
    return f"{method} /{name} HTTP/1.1\r\nHost: {V4}\r\n{extra}" + ("Connection: close\r\n" if close else "") + "\r\n"


def _without_date(response: Response) -> Response:
    status, headers, body = response
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers.pop("date")), headers
    return status, headers, body


def test_same_answer_as_aiohttp(env: Env) -> None:
    # "Content-Length: 0" on a GET sends the request to aiohttp's path (the fast path takes no body), which answers
    # it as it answers any GET: the two answers must be the same, but for the Date.
    _, headers, _ = env.curl(env.phone, f"http://{V4}/common.cfg")
    cases = [("common.cfg", (), "GET"), ("common.cfg", (), "HEAD"), ("y000000000000.boot", (), "GET"),
             (f"{MAC}.cfg", (), "GET"),  # the phone's own file: Cache-Control private
             ("common.cfg", (f"If-None-Match: {headers['etag']}",), "GET"),
             ("common.cfg", (f"If-Modified-Since: {headers['last-modified']}",), "HEAD"),
             ("missing.cfg", (), "GET"), ("dir", (), "GET"), ("../etc/passwd", (), "GET"),
             ("common.cfg", ("User-Agent: Yealink SIP-T46U 108.86.0.90 00:15:65:aa:00:01",), "GET")]
    for name, fields, method in cases:
        data, closed = _talk(env, _get(name, *fields, method=method))
        (fast,) = _responses(data, [method])
        data, closed_too = _talk(env, _get(name, *fields, "Content-Length: 0", method=method))
        (slow,) = _responses(data, [method])
        assert closed and closed_too
        assert _without_date(fast) == _without_date(slow), (name, fields, method)
    # And the contents are the tree's.
    data, _ = _talk(env, _get("common.cfg"))
    assert _responses(data, ["GET"])[0][2] == env.files["common.cfg"]


def test_keep_alive_pipelined_then_handed_over(env: Env) -> None:
    # Several requests on one connection, sent at once: the first ones answered by the fast path, then a Range
    # request that aiohttp answers on the same connection, then more requests after it (aiohttp's from then on).
    requests = [_get("common.cfg", close=False), _get("dir/sub.cfg", close=False),
                _get("common.cfg", close=False, method="HEAD"), _get("common.cfg", "Range: bytes=0-9", close=False),
                _get("y000000000000.boot")]
    data, closed = _talk(env, "".join(requests))
    answers = _responses(data, ["GET", "GET", "HEAD", "GET", "GET"])
    assert closed
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK"] * 3 + ["HTTP/1.1 206 Partial Content", "HTTP/1.1 200 OK"]
    assert answers[0][2] == env.files["common.cfg"] and answers[1][2] == env.files["dir/sub.cfg"]
    assert answers[2][2] == b"" and answers[2][1]["content-length"] == str(len(env.files["common.cfg"]))
    assert answers[3][2] == env.files["common.cfg"][:10]
    assert answers[4][2] == env.files["y000000000000.boot"]
    assert all("connection" not in a[1] for a in answers[:4]) and answers[4][1]["connection"] == "close"


def test_put_and_auth_handed_over_on_the_same_connection(env: Env) -> None:
    body = b"#!version:1.0.0.1\nlocal = 1\n"
    put = (f"PUT /{MAC}-local.cfg HTTP/1.1\r\nHost: {V4}\r\nContent-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
    data, closed = _talk(env, _get("common.cfg", close=False), put)
    first, stored = _responses(data, ["GET", "PUT"])
    assert closed and first[0] == "HTTP/1.1 200 OK" and first[2] == env.files["common.cfg"]
    assert stored[0] in ("HTTP/1.1 201 Created", "HTTP/1.1 204 No Content"), stored
    data, _ = _talk(env, _get(f"{MAC}-local.cfg"))
    assert _responses(data, ["GET"])[0][2] == body  # served back (it is small: the fast path)
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    data, closed = _talk(env, _get("common.cfg", close=False), _get("T46U_1/y000000000000.cfg", close=False),
                         _get("T46U_1/y000000000000.cfg", f"Authorization: Basic {credentials}"), seconds=10)
    answers = _responses(data, ["GET", "GET", "GET"])
    assert [a[0].split()[1] for a in answers] == ["200", "401", "200"], answers
    assert answers[1][1]["www-authenticate"].startswith("Basic realm=")
    assert answers[2][2] == env.files["T46U_1/y000000000000.cfg"]


def test_head_in_pieces(env: Env) -> None:
    # A head that arrives in several segments (0.1 s apart) is put together and answered.
    head = _get("common.cfg")
    data, closed = _talk(env, head[:3], head[3:20], head[20:-1], head[-1:])
    ((status, _, body),) = _responses(data, ["GET"])
    assert closed and status == "HTTP/1.1 200 OK" and body == env.files["common.cfg"]


def test_heads_aiohttp_refuses(env: Env) -> None:
    cases = [
        _get("common.cfg", "X-Long: " + "a" * 9000),  # a line over max_header_size, whole head under 64 KB
        _get("common.cfg", "X-Big: " + "a" * 70000),  # past what the fast path buffers
        "GET /common.cfg HTTP/1.1\r\nConnection: close\r\n\r\n",  # HTTP/1.1 without Host
        _get("common.cfg", " folded"),  # obs-fold
        "GET /common.cfg HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /common.cfg HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",  # a control character
    ]
    for request in cases:
        data, closed = _talk(env, request, node="intruder")
        assert re.match(rb"HTTP/1\.[01] 400 ", data) and closed, (request[:60], data[:200])
    env.healthy(env.intruder)


def test_http_10(env: Env) -> None:
    data, closed = _talk(env, "GET /common.cfg HTTP/1.0\r\n\r\n")
    ((status, headers, body),) = _responses(data, ["GET"])
    assert closed and status == "HTTP/1.0 200 OK" and "connection" not in headers and body == env.files["common.cfg"]
    data, closed = _talk(env, "GET /common.cfg HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                         "GET /dir/sub.cfg HTTP/1.0\r\n\r\n")
    first, second = _responses(data, ["GET", "GET"])
    assert closed and first[1]["connection"] == "keep-alive" and second[2] == env.files["dir/sub.cfg"]


def test_client_that_stops_reading_is_closed(env: Env) -> None:
    # Pipelined requests for small files from a client that reads nothing: the answers pile up in the transport,
    # the connection stops reading more requests, and once nothing was taken for send_timeout (2 s here) it is
    # closed and counted, like a stalled download on aiohttp's path.
    count = 400
    request = _get("common.cfg", close=False).encode()
    report = env.raw(env.intruder, V4, 80, "stall", (request * count).hex(), "8")
    assert report["closed"] and report["received"] < count * len(env.files["common.cfg"]), report
    env.healthy(env.intruder)
    env.app.stop()  # the counters are logged at stop
    env.app.start()
    assert "http.send_timeout" in env.app.log(), env.app.log()[-2000:]


def test_idle_keep_alive_connection_is_closed(env: Env) -> None:
    # keepalive_timeout is 5 s in the lab: an idle connection after an answer is closed by the sweep.
    data, closed = _talk(env, _get("common.cfg", close=False), seconds=12)
    ((status, _, _),) = _responses(data, ["GET"])
    assert status == "HTTP/1.1 200 OK" and closed


def _handed_over(env: Env, since: int) -> int:
    """How many connections the daemon handed to aiohttp, from the counters it logged as it stopped (the log
    past ``since`` characters: this run's)."""
    env.app.stop()
    counts = re.findall(r"http\.handed_over\W{1,6}(\d+)", env.app.log()[since:])
    assert len(counts) <= 1
    return int(counts[0]) if counts else 0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_only_what_needs_aiohttp_is_handed_over(env: Env, loop: str) -> None:
    env.app.stop()
    env.app.start("--event-loop", loop)
    try:
        # Warm the page cache: a file only on the disk is read by a worker, on aiohttp's path.
        for name in ("common.cfg", "dir/sub.cfg", "missing.cfg"):
            _talk(env, _get(name))
        etag = _etag(env)
        env.app.stop()
        since = len(env.app.log())
        env.app.start("--event-loop", loop)
        requests = [_get("common.cfg", close=False), _get("dir/sub.cfg", close=False), _get("missing.cfg", close=False),
                    _get("common.cfg", f"If-None-Match: {etag}")]
        data, closed = _talk(env, "".join(requests))
        answers = _responses(data, ["GET", "GET", "GET", "GET"])
        assert closed and [a[0].split()[1] for a in answers] == ["200", "200", "404", "304"]
        assert answers[0][2] == env.files["common.cfg"] and answers[1][2] == env.files["dir/sub.cfg"]
        data, closed = _talk(env, _get("common.cfg", close=False), _get("common.cfg", "Range: bytes=0-1"))
        first, part = _responses(data, ["GET", "GET"])
        assert first[2] == env.files["common.cfg"] and part[2] == env.files["common.cfg"][:2]
        assert _handed_over(env, since) == 1  # the Range request's connection, and nothing else
    finally:
        env.app.stop()
        env.app.start()


def _etag(env: Env) -> str:
    data, _ = _talk(env, _get("common.cfg", method="HEAD"))
    return _responses(data, ["HEAD"])[0][1]["etag"]


def _fetch(env: Env, request: str, rcvbuf: int = 0, wait: float = 0.0) -> tuple[Response, str]:
    report = env.raw(env.phone, V4, 80, "fetch", request.encode("latin-1").hex(), str(rcvbuf), str(wait))
    (response,) = _responses(bytes.fromhex(report["data"]), [request.split()[0]])
    return response, str(report["end"])


def test_answered_at_accept_every_byte_then_fin(env: Env) -> None:
    # A request that is complete when its connection is accepted and asks to close is answered there, without a
    # transport (bootstrapd/http/accept.py): the client gets every byte and a FIN (everything it sent was read, so
    # the close is no reset). A file larger than a fresh socket's send buffer, to a client that reads late: the
    # socket takes part of the answer, a transport sends the rest, then the FIN.
    big = bytes(range(256)) * 230  # 58,880 bytes: still answered from memory (under 64 KB)
    (env.root / "big.cfg").write_bytes(big)
    cases = [("common.cfg", 0, 0.0), ("big.cfg", 0, 0.0), ("big.cfg", 4096, 1.0)]
    for name, rcvbuf, wait in cases:
        (status, headers, body), end = _fetch(env, _get(name), rcvbuf, wait)
        assert (status, end) == ("HTTP/1.1 200 OK", "fin") and headers["connection"] == "close", (name, rcvbuf)
        assert body == (big if name == "big.cfg" else env.files[name]), name
    for request in ("GET /common.cfg HTTP/1.0\r\n\r\n", _get("missing.cfg"), _get("common.cfg", method="HEAD")):
        (status, _, body), end = _fetch(env, request)
        assert end == "fin" and status.split()[1] in ("200", "404"), (request, status)


def test_silent_client_is_closed(env: Env) -> None:
    # A client that connects and sends nothing: the kernel passes the connection on after about a second
    # (TCP_DEFER_ACCEPT), and the idle deadline (keepalive_timeout, 5 s in the lab) closes it, without an answer.
    data, closed = _talk(env, seconds=15)
    assert closed and data == b""
    env.healthy()


def test_admission_released_whatever_path(env: Env) -> None:
    # More connections one after the other from one client than it may hold at once (16 in the lab), answered at
    # accept, through a transport (keep-alive, hand-over to aiohttp, a head in two pieces), or ended by the client
    # before its request: every one is released when it ends, so none is refused.
    requests: list[tuple[str, ...]] = [(_get("common.cfg"),), (_get("common.cfg", close=False), _get("dir/sub.cfg")),
                                       (_get("common.cfg", "Range: bytes=0-1"),), (_get("common.cfg")[:5],
                                                                                   _get("common.cfg")[5:])]
    for _ in range(6):
        for chunks in requests:
            data, closed = _talk(env, *chunks)
            assert closed and data.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 206 ")), (chunks, data[:100])
        _talk(env, seconds=0.0)  # connects, sends nothing, closes
    report = env.raw(env.phone, V4, 80, "hold", "16", b"GET /".hex())
    assert report["statuses"] == [None] * 16, report  # all 16 admitted: nothing left counted


def test_stop_with_connections_open(env: Env) -> None:
    # Connections in every state when the daemon stops: idle after a keep-alive answer (the fast path's), a head
    # not complete yet, one handed to aiohttp (idle after a Range answer). The daemon exits cleanly and every client
    # sees its connection end, long before its own 20 s. (A client that has sent nothing may still wait in the
    # kernel's queue (TCP_DEFER_ACCEPT): closing the listener does not reset it; it learns it when it sends.)
    chunks = [[_get("common.cfg", close=False)], [_get("common.cfg")[:10]],
              [_get("common.cfg", "Range: bytes=0-1", close=False)]]
    clients = [env.phone.popen([sys.executable, "-m", "tests.lab.rawclient", V4, "80", "talk", "20",
                                *(c.encode().hex() for c in chunk)], stdout=subprocess.PIPE, text=True)
               for chunk in chunks]
    try:
        time.sleep(1.0)  # the clients start, connect and send
        assert env.app.stop() == 0
        for client in clients:
            out, _ = client.communicate(timeout=15)
            assert json.loads(out)["closed"], out
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        env.app.start()
    env.healthy()
