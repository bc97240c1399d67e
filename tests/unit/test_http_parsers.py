"""The HTTP adapter's pure parsers: request paths, Range headers, Yealink User-Agents (hypothesis throughout)."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
