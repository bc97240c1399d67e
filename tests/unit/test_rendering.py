"""Inventory, templates and the rendered-files overlay: errors that name what they must, refused injections,
deterministic output across runs and restarts, changes picked up without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.provisioning.inventory import parse_csv, parse_toml, read_inventory
from bootstrapd.provisioning.overlays import RenderedFiles

HEADER = "mac,model,extension,password,site\n"
ROWS = "00:15:65:00:00:01,T46U,1001,pw-1,hq\n00-15-65-00-00-02,sip-t48u,1002,pw-2,hq\n001565000003,T54W,3001,pw-3,f3\n"
MAC_TEMPLATE = ("#!version:1.0.0.1\n## {{ phone.product }}\naccount.1.user_name = {{ phone.extension }}\n"
                "account.1.password = {{ phone.password }}\n{% if phone.site == 'hq' %}\nfeatures.x = 1\n{% endif %}\n")


def tree(tmp_path: Path, templates: dict[str, str], rows: str = ROWS) -> tuple[Path, Path]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    for name, text in templates.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    inventory = tmp_path / "phones.csv"
    inventory.write_text(HEADER + rows)
    return root, inventory


# -- inventory --------------------------------------------------------------------------------------------------

def test_inventory_rows_are_normalised() -> None:
    inv = parse_csv(HEADER + ROWS, "p.csv")
    assert not inv.errors
    assert [(p.mac, p.model.id, p.row) for p in inv] == [
        ("001565000001", "T46U", 2), ("001565000002", "T48U", 3), ("001565000003", "T54W", 4)]
    assert inv.phones[0].context()["common_cfg"] == "y000000000108.cfg"


@pytest.mark.parametrize(("rows", "row", "column", "words"), [
    ("00:15:65:00:00:01,T46U,1,a,b\n00:15:65:00:00:01,T48U,2,a,b\n", 3, "mac", ["listed twice", "row 2"]),
    ("00:15:65:00:00:zz,T46U,1,a,b\n", 2, "mac", ["not a MAC address"]),
    ("00:15:65:00:00:01,T99X,1,a,b\n", 2, "model", ["unknown model 'T99X'"]),
    ("00:15:65:00:00:01,,1,a,b\n", 2, "model", ["required"]),
    ("00:15:65:00:00:01,T46U,1\n", 2, None, ["3 fields, the header has 5"]),
    ('00:15:65:00:00:01,T46U,1,"pw\naccount.1.sip_server.1.address = evil",b\n', 3, "password", ["line break"]),
    ("00:15:65:00:00:01,T46U,1,pw\x00x,b\n", 2, "password", ["U+0000"]),
    ("00:15:65:00:00:01,T46U,1,pw\u2028x,b\n", 2, "password", ["U+2028"]),
])
def test_inventory_errors_name_file_row_and_column(rows: str, row: int, column: str | None,
                                                   words: list[str]) -> None:
    inv = parse_csv(HEADER + rows, "phones.csv")
    assert len(inv.errors) == 1, inv.errors
    err = inv.errors[0]
    assert (err.file, err.row, err.column) == ("phones.csv", row, column)
    text = str(err)
    assert text.startswith(f"phones.csv:{row}: ") and all(w in text for w in words)
    assert "evil" not in text and "pw" not in text  # values (passwords) are never shown


def test_inventory_header_errors() -> None:
    assert "no such column" in str(parse_csv("mac,extension\n", "p.csv").errors[0])
    assert "column name" in str(parse_csv("mac,model,first name\n", "p.csv").errors[0])
    assert "no header" in str(parse_csv("", "p.csv").errors[0])


def test_toml_inventory_with_lines() -> None:
    text = ('[[phone]]\nmac = "00:15:65:00:00:01"\nmodel = "T46U"\nextension = 1001\n\n'
            '[[phone]]\nmac = "00:15:65:00:00:02"\nmodel = "T46U"\nlabel = "a\\nb"\n')
    inv = parse_toml(text, "p.toml")
    assert [p.values["extension"] for p in inv.phones] == ["1001"]
    assert [(e.row, e.column) for e in inv.errors] == [(9, "label")]


def test_inventory_file_errors(tmp_path: Path) -> None:
    assert "cannot read" in str(read_inventory(tmp_path / "none.csv").errors[0])
    (tmp_path / "bad.csv").write_bytes(b"mac,model\n\xff\n")
    assert str(read_inventory(tmp_path / "bad.csv").errors[0]).endswith(":2: not UTF-8 text")


@given(st.text(max_size=500))
def test_inventory_parsers_never_raise(text: str) -> None:
    parse_csv(text, "p.csv")
    parse_toml(text, "p.toml")


# -- templates -------------------------------------------------------------------------------------------------

def test_mac_template_renders_one_file_per_phone(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"{mac}.cfg.j2": MAC_TEMPLATE, "site-{site}.cfg.j2": "{{ phones|length }}\n",
                                      "{pn}/y000000000000.boot.j2": "#!version:1.0.0.1\n## {{ pn }}\n",
                                      "all.xml.j2": "{% for p in inventory %}{{ p.mac }} {% endfor %}\n"})
    rendered = RenderedFiles(root, inventory)
    assert rendered.refresh() is None
    assert sorted(rendered.names()) == ["001565000001.cfg", "001565000002.cfg", "001565000003.cfg",
                                        "T46U/y000000000000.boot", "T48U/y000000000000.boot",
                                        "T54W/y000000000000.boot", "all.xml", "site-f3.cfg", "site-hq.cfg"]
    one = rendered.get("001565000001.cfg")
    assert one is not None and one.origin == "rendered:{mac}.cfg.j2"
    assert one.data == (b"#!version:1.0.0.1\n## SIP-T46U\naccount.1.user_name = 1001\naccount.1.password = pw-1\n"
                        b"features.x = 1\n")
    assert rendered.get("site-hq.cfg").data == b"2\n"  # type: ignore[union-attr]
    assert rendered.get("001565000001.cfg.j2") is None


def test_output_is_byte_identical_across_runs_and_restarts(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"{mac}.cfg.j2": MAC_TEMPLATE, "d.xml.j2": "{{ inventory }}\n"})
    first = RenderedFiles(root, inventory)
    first.refresh()
    again = {n: first.get(n) for n in first.names()}
    first.refresh(force=True)
    restarted = RenderedFiles(root, inventory)  # a new process would build exactly this
    restarted.refresh()
    for name, content in again.items():
        assert content is not None
        assert first.get(name) == content and restarted.get(name) == content  # data and mtime alike


def test_template_errors_name_template_line_and_phone(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"{mac}.cfg.j2": "#!version:1.0.0.1\na = 1\nb = {{ phone.nosuch }}\n",
                                      "broken.cfg.j2": "x\n{% if %}\n"})
    problems = RenderedFiles(root, inventory).refresh()
    assert problems is not None
    texts = sorted(str(p) for p in problems)
    assert texts[0].startswith("broken.cfg.j2:2: syntax error")
    assert texts[1].startswith("{mac}.cfg.j2:3: undefined: ") and "nosuch" in texts[1]
    assert texts[1].endswith("(phone 001565000001)")


def test_the_sandbox_refuses_unsafe_access(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"x.cfg.j2": "{{ ''.__class__.__mro__[1].__subclasses__() }}\n"})
    problems = RenderedFiles(root, inventory).refresh()
    assert problems and "x.cfg.j2:1" in str(problems[0])


def test_a_template_and_a_static_file_of_one_name_is_an_error(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"{mac}.cfg.j2": "x\n", "001565000002.cfg": "static\n"})
    problems = RenderedFiles(root, inventory).refresh()
    assert problems and "001565000002.cfg, which is also a static file" in str(problems[0])


def test_unsafe_values_in_file_names_are_refused(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"site-{site}.cfg.j2": "x\n"}, rows="00:15:65:00:00:01,T46U,1,pw,../x\n")
    problems = RenderedFiles(root, inventory).refresh()
    assert problems and "{site} of inventory row 2 is not usable in a file name" in str(problems[0])


def test_changes_on_disk_are_picked_up_and_errors_keep_the_previous_files(tmp_path: Path) -> None:
    root, inventory = tree(tmp_path, {"{mac}.cfg.j2": MAC_TEMPLATE})
    rendered = RenderedFiles(root, inventory)
    rendered.refresh()
    assert rendered.refresh() is None and rendered.generation == 1  # nothing changed: no rebuild
    inventory.write_text(HEADER + ROWS.replace("pw-1", "pw-new"))
    os.utime(inventory, ns=(1, 1))  # a new identity even within the same clock tick
    assert rendered.refresh() is None and rendered.generation == 2
    assert b"pw-new" in rendered.get("001565000001.cfg").data  # type: ignore[union-attr]
    inventory.write_text(HEADER + ROWS + "00:15:65:00:00:01,T46U,9,x,y\n")  # a duplicate MAC
    assert rendered.refresh() is not None and rendered.generation == 2
    assert b"pw-new" in rendered.get("001565000001.cfg").data  # type: ignore[union-attr]
    assert rendered.refresh() is None  # the broken inputs are not rebuilt again until they change
    (root / "new.cfg.j2").write_text("n\n")
    inventory.write_text(HEADER + ROWS)
    assert rendered.refresh() is None and rendered.get("new.cfg") is not None
