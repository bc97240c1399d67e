"""The HTTP adapter's pure parsers: request paths, Range headers, Yealink User-Agents, the fast path's request
heads (hypothesis throughout)."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.http.head import BadHead, Head, format_head, head_end, may_take, parse_head
from bootstrapd.http.paths import BadPath, decode_path
from bootstrapd.http.ranges import MAX_RANGES, Unsatisfiable, parse_ranges
from bootstrapd.http.useragent import BadUserAgent, PhoneAgent, parse_user_agent


@pytest.mark.parametrize("target", ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%00", "/%zz", "/%f", "/%ff", "/a%0d%0a", "a",
                                    "/\x01", "/" + "a" * 9000])
def test_bad_paths(target: str) -> None:
    with pytest.raises(BadPath):
        decode_path(target)


def test_good_paths() -> None:
    assert decode_path("/a/b.cfg?x=1#f") == "/a/b.cfg"
    assert decode_path("/%2e%2e/x") == "/../x"  # decoded; the resolver refuses it as an escape
    assert decode_path("/T46U%20Directory/%C3%A9.cfg") == "/T46U Directory/é.cfg"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
def test_path_round_trip(name: str) -> None:
    target = "/" + urllib.parse.quote(name.replace("/", "_").replace("\\", "_"), safe="")
    assert decode_path(target) == "/" + name.replace("/", "_").replace("\\", "_")


@given(st.text(max_size=200))
def test_paths_never_raise_anything_else(target: str) -> None:
    try:
        decode_path(target)
    except BadPath:
        pass


def test_ranges() -> None:
    assert parse_ranges("bytes=0-9", 100) == [(0, 9)]
    assert parse_ranges("bytes=90-", 100) == [(90, 99)]
    assert parse_ranges("bytes=-10", 100) == [(90, 99)]
    assert parse_ranges("bytes=-200", 100) == [(0, 99)]
    assert parse_ranges("bytes=0-999", 100) == [(0, 99)]
    assert parse_ranges("bytes=50-59, 0-9", 100) == [(50, 59), (0, 9)]  # disjoint: the order asked for
    assert parse_ranges("bytes=0-9,5-20,21-30", 100) == [(0, 30)]  # overlapping/adjacent: merged
    assert parse_ranges("bytes=0-9,200-", 100) == [(0, 9)]  # the unsatisfiable one is dropped
    for ignored in ("items=0-9", "bytes=9-0", "bytes=a-b", "bytes=", "bytes=-", "bytes 0-9", "bytes=1-2-3",
                    "bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), "bytes=٣-٤"):
        assert parse_ranges(ignored, 100) is None, ignored
    for unsatisfiable in ("bytes=9999999-", "bytes=-0", "bytes=100-200", "bytes=-0,100-"):
        with pytest.raises(Unsatisfiable):
            parse_ranges(unsatisfiable, 100)
    with pytest.raises(Unsatisfiable):
        parse_ranges("bytes=0-", 0)


@given(st.text(max_size=80), st.integers(0, 10**9))
def test_ranges_never_raise_anything_else(header: str, size: int) -> None:
    try:
        ranges = parse_ranges(header, size)
    except Unsatisfiable:
        return
    if ranges is not None:
        assert 1 <= len(ranges) <= MAX_RANGES
        assert all(0 <= first <= last < size for first, last in ranges)


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), min_size=1, max_size=MAX_RANGES),
       st.integers(1, 6000))
def test_ranges_select_the_bytes_asked_for(pairs: list[tuple[int, int]], size: int) -> None:
    specs = [(min(a, b), max(a, b)) for a, b in pairs]
    header = "bytes=" + ",".join(f"{a}-{b}" for a, b in specs)
    wanted = {i for a, b in specs for i in range(a, min(b, size - 1) + 1)}
    try:
        ranges = parse_ranges(header, size)
    except Unsatisfiable:
        assert not wanted
        return
    assert ranges is not None
    got = [i for a, b in ranges for i in range(a, b + 1)]
    assert len(got) == len(set(got)) and set(got) == wanted  # every byte asked for, once


def test_yealink_user_agents() -> None:
    assert parse_user_agent("Yealink SIP-T46U 108.86.0.90 80:5e:c0:d5:7d:72") == PhoneAgent(
        "yealink", "T46U", "108.86.0.90", "805ec0d57d72")
    assert parse_user_agent("Yealink SIP-T21P_E2 52.84.0.15 00:15:65:AA:BB:CC") == PhoneAgent(
        "yealink", "T21P_E2", "52.84.0.15", "001565aabbcc")
    assert parse_user_agent("yealink W60B 77.83.0.10") == PhoneAgent("yealink", "W60B", "77.83.0.10", None)
    assert parse_user_agent("curl/8.5.0") is None
    assert parse_user_agent("Yealink SIP-T46U 108.86.0.90 not-a-mac") == PhoneAgent("yealink", "T46U", "108.86.0.90",
                                                                                     None)
    for bad in ("Yealink SIP-T46U\r\nX-Injected: 1", "Yealink\x00", "Yealink\x1b[31m", "a" * 600, "Yealink\u2028x"):
        with pytest.raises(BadUserAgent):
            parse_user_agent(bad)


models = st.from_regex(r"[A-Z][A-Z0-9]{1,5}(_E2)?", fullmatch=True)
versions = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", fullmatch=True)
macs = st.binary(min_size=6, max_size=6)


@given(models, versions, macs)
def test_user_agent_round_trip(model: str, version: str, mac: bytes) -> None:
    text = f"Yealink SIP-{model} {version} {':'.join(f'{b:02x}' for b in mac)}"
    assert parse_user_agent(text) == PhoneAgent("yealink", model, version, mac.hex())


@given(st.text(max_size=300))
def test_user_agents_never_raise_anything_else(text: str) -> None:
    try:
        agent = parse_user_agent(text)
    except BadUserAgent:
        return
    if agent is not None:
        assert all(c.isprintable() for c in agent.model + (agent.version or "") + (agent.mac or ""))


# -- the fast path's request head (bootstrapd/http/head.py) ----------------------------------------------------

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_tokens = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12)
_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    lambda v: v.strip(" \t"))


@st.composite
def _heads(draw: st.DrawFn) -> Head:
    minor = draw(st.sampled_from([0, 1]))
    fields = draw(st.lists(st.tuples(_tokens.filter(lambda n: n.lower() != "host"), _values), max_size=8))
    if minor == 1 or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("Host", draw(_values)))
    target = "/" + draw(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30))
    return Head(draw(_tokens), target, minor, tuple(fields))


@given(_heads())
def test_head_round_trip(head: Head) -> None:
    parsed = parse_head(format_head(head))
    assert parsed == head
    assert parsed.get("HOST") == head.get("host")
    assert may_take(format_head(head)) == (head.method in ("GET", "HEAD"))


@given(st.binary(max_size=300))
def test_heads_never_raise_anything_else(data: bytes) -> None:
    for candidate in (data, data + b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n" + data + b"\r\n\r\n"):
        try:
            parse_head(candidate, 64)
        except BadHead:
            pass
        may_take(candidate)
        head_end(candidate)


@given(_heads(), st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_damaged_heads_never_raise_anything_else(head: Head, at: int, junk: bytes) -> None:
    data = format_head(head)
    at %= len(data)
    try:
        parse_head(data[:at] + junk + data[at:])
    except BadHead:
        pass


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two
    b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",  # a control character
    b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\n\r\n",  # obs-text: aiohttp decides
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute-form
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # not ended
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000 + b"\r\n\r\n",  # a line over the limit
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n",  # too many fields
])
def test_heads_refused(data: bytes) -> None:
    with pytest.raises(BadHead):
        parse_head(data)


def test_head_fields_and_keep_alive() -> None:
    head = parse_head(b"GET /a/b.cfg?x=1 HTTP/1.1\r\nHost: 10.77.0.1\r\nuser-agent:  Yealink T46U \t\r\n"
                      b"X-Empty:\r\nX-Twice: 1\r\nx-twice: 2\r\n\r\n")
    assert (head.method, head.target, head.minor) == ("GET", "/a/b.cfg?x=1", 1)
    assert head.get("User-Agent") == "Yealink T46U" and head.get("x-empty") == "" and head.get("X-TWICE") == "1"
    assert head.get("range") is None and head.keep_alive

    def alive(minor: int, connection: str | None) -> bool:
        fields = (("Host", "a"),) + ((("Connection", connection),) if connection is not None else ())
        return Head("GET", "/", minor, fields).keep_alive

    assert not alive(1, "close") and not alive(1, "Keep-Alive, close") and alive(1, "upgrade")
    assert not alive(0, None) and alive(0, "keep-alive") and alive(0, "Keep-Alive") and not alive(0, "close")


def test_may_take_and_head_end() -> None:
    assert may_take(b"") and may_take(b"G") and may_take(b"HEA") and may_take(b"GET /x")
    assert not may_take(b"POST /") and not may_take(b"\x16\x03\x01") and not may_take(b"PRI * HTTP/2.0")
    assert not may_take(b"GETX")
    assert head_end(b"GET / HTTP/1.0\r\n\r\nrest") == 18 and head_end(b"GET / HTTP/1.0\r\n") == -1
