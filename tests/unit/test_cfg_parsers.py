"""The CFG and boot-file parsers: findings with lines, round trips, and never an exception on arbitrary input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.provisioning.bootfile import Include, format_boot, parse_boot
from bootstrapd.provisioning.cfgfile import Entry, format_cfg, parse_cfg
from bootstrapd.provisioning.models import table


def codes(findings: list) -> list[tuple[int | None, str]]:  # type: ignore[type-arg]
    return [(f.line, f.code) for f in findings]


def test_cfg_lines() -> None:
    cfg = parse_cfg(b"#!version:1.0.0.1\n# comment\n\na = 1\n[T46S, T23G] b = x = y\nc =\r\nnot a line\n", "f.cfg")
    assert [(e.key, e.value, e.line, e.models) for e in cfg.entries] == [
        ("a", "1", 4, ()), ("b", "x = y", 5, ("T46S", "T23G")), ("c", "", 6, ())]
    assert codes(cfg.findings) == [(7, "not-key-value")]


def test_headers() -> None:
    assert codes(parse_cfg(b"#!/version:1.0.0.1\n", "f").findings) == [(1, "header-slash")]
    assert codes(parse_cfg(b"\n#!version:1.0.0.1\n", "f").findings) == [(1, "missing-header")]
    missing = parse_cfg(b"a = 1\n", "f")
    assert not missing.header_ok and codes(missing.findings) == [(1, "missing-header")]
    assert codes(parse_cfg("\ufeff#!version:1.0.0.1\n".encode(), "f").findings) == [(1, "bom")]


def test_unknown_model_names_and_duplicates() -> None:
    cfg = parse_cfg(b"#!version:1.0.0.1\n[T46X] a = 1\n[t46s] a = 2\nb = 1\nb = 2\n[T46S] b = 3\n", "f")
    found = codes(cfg.findings)
    assert (2, "unknown-model") in found and (3, "unknown-model") in found and (5, "duplicate-key") in found
    assert "T46S" in cfg.findings[1].message  # a suggestion for the lower-case spelling
    assert len([f for f in found if f[1] == "duplicate-key"]) == 1  # [T46S] b is another scope


def test_boot_file() -> None:
    boot = parse_boot(b'#!version:1.0.0.1\n[T46S]include:config <tftp://h/n.cfg>\n'
                      b'[T48S,T46G]include:config <../sip.cfg>\ninclude:config "features.cfg"\n'
                      b'include:config bare.cfg\ninclude:config\noverwrite_mode = 1\n'
                      b'specific_model.excluded_mode=0\nfoo = 1\noverwrite_mode = 2\n', "y000000000000.boot")
    assert [(i.url, i.line, i.models) for i in boot.includes] == [
        ("tftp://h/n.cfg", 2, ("T46S",)), ("../sip.cfg", 3, ("T48S", "T46G")), ("features.cfg", 4, ()),
        ("bare.cfg", 5, ())]
    assert codes(boot.findings) == [(5, "include-unquoted"), (6, "bad-include"), (9, "not-boot-setting"),
                                    (10, "bad-boot-value")]
    assert boot.settings["overwrite_mode"][0].value == 1


names = st.sampled_from(sorted(table().prefix_names))
keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,30}", fullmatch=True)
values = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40).map(str.strip)


@given(st.lists(st.builds(Entry, keys, values, st.just(0), st.lists(names, max_size=3, unique=True).map(tuple)),
                max_size=20))
def test_cfg_round_trip(entries: list[Entry]) -> None:
    parsed = parse_cfg(format_cfg(entries).encode(), "f.cfg")
    assert parsed.header_ok
    assert [(e.key, e.value, e.models) for e in parsed.entries] == [(e.key, e.value, e.models) for e in entries]
    assert [e.line for e in parsed.entries] == list(range(2, len(entries) + 2))


urls = st.from_regex(r"[A-Za-z0-9_./:\-]{1,40}", fullmatch=True).filter(lambda u: u.strip() == u)


@given(st.lists(st.builds(Include, urls, st.just(0), st.lists(names, max_size=2, unique=True).map(tuple)),
                max_size=10), st.sampled_from([0, 1]), st.sampled_from([0, 1]))
def test_boot_round_trip(includes: list[Include], overwrite: int, excluded: int) -> None:
    text = format_boot(includes, {"overwrite_mode": overwrite, "specific_model.excluded_mode": excluded})
    boot = parse_boot(text.encode(), "b.boot")
    assert [(i.url, i.models) for i in boot.includes] == [(i.url, i.models) for i in includes]
    assert boot.settings["overwrite_mode"][0].value == overwrite


@given(st.binary(max_size=3000))
def test_parsers_never_raise_on_bytes(data: bytes) -> None:
    parse_cfg(data, "f.cfg")
    parse_boot(data, "f.boot")


@given(st.text(max_size=2000))
def test_parsers_never_raise_on_text(text: str) -> None:
    parse_cfg("#!version:1.0.0.1\n" + text, "f.cfg")
    parse_boot("#!version:1.0.0.1\n" + text, "f.boot")
