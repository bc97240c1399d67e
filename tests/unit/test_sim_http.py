"""The simulated phone's HTTP/1.1 client core: the request it sends, responses read in any split (Content-Length,
chunked, to the end of the connection, interim 1xx, no-body statuses), limits, and hostile bytes (only HttpError)."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.sim.http import MAX_HEAD, HttpError, Response, ResponseReader, basic_auth, encode_request


def read(data: bytes, splits: list[int] | None = None, *, eof: bool = False, head: bool = False) -> Response:
    reader = ResponseReader(head_request=head)
    cuts = sorted({0, len(data), *[s % (len(data) + 1) for s in splits or []]})
    response = None
    for start, end in itertools.pairwise(cuts):
        response = reader.feed(data[start:end]) or response
    if response is None and eof:
        response = reader.eof()
    assert response is not None
    return response


def test_the_request_a_phone_sends() -> None:
    wire = encode_request("GET", "/T46U_1/y000000000000.boot", "10.77.0.1",
                          [("User-Agent", "Yealink SIP-T46U 108.86.0.90 00:15:65:aa:bb:cc"), ("Accept", "*/*"),
                           ("Authorization", basic_auth("floor3", "s3cret:x"))])
    head = wire.decode().split("\r\n")
    assert head[:3] == ["GET /T46U_1/y000000000000.boot HTTP/1.1", "Host: 10.77.0.1",
                        "User-Agent: Yealink SIP-T46U 108.86.0.90 00:15:65:aa:bb:cc"]
    assert base64.b64decode(head[4].split(" ")[2]) == b"floor3:s3cret:x"
    assert wire.endswith(b"\r\n\r\n")
    put = encode_request("PUT", "/001565aabbcc-local.cfg", "10.77.0.1:8080", [], b"#!version:1.0.0.1\n")
    assert b"Content-Length: 18\r\n\r\n#!version:1.0.0.1\n" in put and b"Host: 10.77.0.1:8080\r\n" in put


def test_a_target_is_percent_encoded_and_nothing_can_break_the_head() -> None:
    wire = encode_request("GET", "/dir with space/a%20b.cfg?x=1", "h", [])
    assert wire.startswith(b"GET /dir%20with%20space/a%20b.cfg?x=1 HTTP/1.1\r\n")
    for bad in ("/x\r\nEvil: 1", "/x\n", "/\x00"):
        with pytest.raises(HttpError):
            encode_request("GET", bad, "h", [])
    with pytest.raises(HttpError):
        encode_request("GET", "/", "h\r\nX: y", [])
    with pytest.raises(HttpError):
        encode_request("GET", "/", "h", [("User-Agent", "a\rb")])


def test_content_length_chunked_close_and_interim() -> None:
    ok = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello")
    assert (ok.status, ok.reason, ok.body, ok.keep_alive, ok.headers["etag"]) == (200, "OK", b"hello", True, '"x"')
    chunked = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\n"
                   b"Trailer: x\r\n\r\n")
    assert chunked.body == b"hello!"
    close = read(b"HTTP/1.1 200 OK\r\n\r\nall of it", eof=True)
    assert close.body == b"all of it" and not close.keep_alive
    interim = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert interim.status == 201 and interim.body == b""
    assert read(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n").body == b""
    assert read(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head=True).body == b""
    assert not read(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert not read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert read(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert read(b"HTTP/1.1 401 \x01bad\r\nContent-Length: 0\r\n\r\n").reason == "?bad"  # shown in reports


@pytest.mark.parametrize("wire", [
    b"SIP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
])
def test_malformed_responses_raise_http_error(wire: bytes) -> None:
    with pytest.raises(HttpError):
        ResponseReader().feed(wire)


def test_limits_and_a_short_response() -> None:
    with pytest.raises(HttpError, match="head"):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD)
    with pytest.raises(HttpError, match="body over"):
        ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(HttpError, match="body over"):
        ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11)
    short = ResponseReader()
    assert short.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel") is None
    with pytest.raises(HttpError, match="closed before"):
        short.eof()


def encode_response(status: int, headers: list[tuple[str, str]], body: bytes, framing: str,
                    chunks: list[int]) -> bytes:
    """A server's response, for the round trip (the client never encodes one)."""
    head = [f"HTTP/1.1 {status} Reason"] + [f"{k}: {v}" for k, v in headers]
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    if framing == "close":
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    head.append("Transfer-Encoding: chunked")
    out = ("\r\n".join(head) + "\r\n\r\n").encode()
    rest = body
    for size in chunks:
        if not rest:
            break
        piece, rest = rest[:max(1, size)], rest[max(1, size):]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if rest:
        out += f"{len(rest):X}\r\n".encode() + rest + b"\r\n"
    return out + b"0\r\n\r\n"


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda n: n not in ("content-length", "transfer-encoding", "connection"))
_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30).map(str.strip)


@settings(max_examples=300)
@given(st.sampled_from([200, 201, 204, 401, 404, 500]), st.lists(st.tuples(_names, _values), max_size=5),
       st.binary(max_size=3000), st.sampled_from(["length", "chunked", "close"]),
       st.lists(st.integers(1, 700), max_size=6), st.lists(st.integers(0, 10_000), max_size=8))
def test_round_trip_in_any_split(status: int, headers: list[tuple[str, str]], body: bytes, framing: str,
                                 chunks: list[int], splits: list[int]) -> None:
    wire = encode_response(status, headers, body, framing, chunks)
    response = read(wire, splits, eof=framing == "close")
    assert response.status == status and response.reason == "Reason"
    assert response.body == (b"" if status == 204 else body)
    assert response.keep_alive is (framing != "close" or status == 204)
    for name, value in headers:
        assert value in response.headers[name]


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=300), max_size=6), st.booleans())
def test_never_raises_anything_but_http_error(pieces: list[bytes], head: bool) -> None:
    reader = ResponseReader(head_request=head, max_body=1000)
    try:
        for piece in [b"HTTP/1.1 200 OK\r\n", *pieces]:
            reader.feed(piece)
        reader.eof()
    except HttpError:
        pass


@settings(max_examples=300)
@given(st.text(max_size=60), st.text(max_size=30), st.lists(st.tuples(_names, st.text(max_size=20)), max_size=3))
def test_a_request_is_sent_whole_or_refused(target: str, host: str, headers: list[tuple[str, str]]) -> None:
    try:
        wire = encode_request("GET", target, host, headers)
    except HttpError:
        return
    head = wire[:-4]
    assert wire.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in head
    assert all(b"\n" not in line and b"\r" not in line for line in head.split(b"\r\n"))
    assert b" " not in head.split(b"\r\n")[0].split(b" ", 1)[1].rsplit(b" ", 1)[0]  # one target, no space in it
