"""``bootstrapd check`` with one broken tree per finding, and ``bootstrapd explain`` in text and JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bootstrapd.cli import main
from scripts.demo import checkout_config

H = "#!version:1.0.0.1\n"
GOOD = {"y000000000000.boot": H + '[T46U]include:config "t46u.cfg"\ninclude:config "sip.cfg"\n'
        'include:config "$MAC.cfg"\n', "t46u.cfg": H + "a = 1\n", "sip.cfg": H + "b = 2\n",
        "{mac}.cfg.j2": H + "account.1.password = {{ phone.password }}\n"}
PHONES = "mac,model,password\n00:15:65:00:00:01,T46U,pw-1\n00:15:65:00:00:02,T48U,pw-2\n"


def setup(tmp_path: Path, files: dict[str, str], phones: str = PHONES, extra: str = "") -> Path:
    root = tmp_path / "root"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "phones.csv").write_text(phones)
    config = tmp_path / "bootstrapd.toml"
    config.write_text(f'[server]\ninterface = "bdtnosuch0"\nroot = "{root}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'url = "tftp://10.77.0.1/"\n[dhcp4]\nenabled = false\n[tftp]\nenabled = true\n'
                      f'[provisioning]\ninventory = "phones.csv"\n{extra}')
    return config


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str],
          **kw: str) -> tuple[int, list[dict[str, object]]]:
    config = setup(tmp_path, files, **kw)
    code = main(["check", "--config", str(config), "--json"])
    report = json.loads(capsys.readouterr().out)
    return code, report["findings"]


def test_the_good_tree_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = check(tmp_path, capsys, GOOD)
    assert (code, findings) == (0, [])


def test_the_shipped_example_tree_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lab.toml"
    config.write_text(checkout_config(tmp_path / "state"))
    assert main(["check", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("0 error(s), 0 warning(s)")


BROKEN = [
    ("missing-header", "error", {"sip.cfg": "b = 2\n"}, "sip.cfg", 1),
    ("header-slash", "warning", {"sip.cfg": "#!/version:1.0.0.1\nb = 2\n"}, "sip.cfg", 1),
    ("not-key-value", "error", {"sip.cfg": H + "b 2\n"}, "sip.cfg", 2),
    ("unknown-model", "error", {"t46u.cfg": H + "[T46X] a = 1\n"}, "t46u.cfg", 2),
    ("include-missing", "error", {"t46u.cfg": None}, "y000000000000.boot", 2),
    ("mac-boot-beside-common", "warning", {"001565000009.boot": H}, "001565000009.boot", None),
    ("upper-case-mac", "error", {"00156500000A.cfg": H}, "00156500000A.cfg", None),
    ("unknown-common-cfg", "warning", {"y000000000999.cfg": H}, "y000000000999.cfg", None),
    ("bad-aes-key", "error", {"sip.cfg": H + "static.auto_provision.aes_key_16.mac = tooshort\n"}, "sip.cfg", 2),
    ("duplicate-key", "warning", {"sip.cfg": H + "b = 1\nb = 2\n"}, "sip.cfg", 3),
    ("template", "error", {"{mac}.cfg.j2": H + "x = {{ phone.nosuch }}\n"}, "{mac}.cfg.j2", 2),
    ("template", "error", {"001565000001.cfg": H}, "{mac}.cfg.j2", None),
    ("include-external", "warning", {"sip.cfg": H, "y000000000000.boot": H + 'include:config "http://other/x.cfg"\n'},
     "y000000000000.boot", 2),
    ("unknown-boot", "warning", {"y0000000000000.boot": H}, "y0000000000000.boot", None),
]


@pytest.mark.parametrize(("code", "severity", "change", "file", "line"), BROKEN, ids=[f"{b[0]}-{i}" for i, b in
                                                                                  enumerate(BROKEN)])
def test_one_broken_tree_per_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str, severity: str,
                                     change: dict[str, str | None], file: str, line: int | None) -> None:
    files = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    status, findings = check(tmp_path, capsys, files)  # type: ignore[arg-type]
    matching = [f for f in findings if f["code"] == code]
    assert matching, findings
    assert (matching[0]["severity"], matching[0]["file"], matching[0]["line"]) == (severity, file, line)
    assert status == (1 if any(f["severity"] == "error" for f in findings) else 0)


def test_an_include_missing_for_one_model_names_that_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, findings = check(tmp_path, capsys, {k: v for k, v in GOOD.items() if k != "t46u.cfg"})
    assert findings[0]["models"] == ["T46U"] and "t46u.cfg is not in the tree" in str(findings[0]["message"])


def test_inventory_errors_are_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, findings = check(tmp_path, capsys, GOOD, phones=PHONES + "00:15:65:00:00:01,T46U,x\n")
    assert status == 1 and findings[0]["code"] == "inventory" and findings[0]["line"] == 4
    assert str(findings[0]["file"]).endswith("phones.csv") and "listed twice" in str(findings[0]["message"])


def test_an_encrypted_mac_file_the_phone_cannot_decrypt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, findings = check(tmp_path, capsys, GOOD, extra="[provisioning.encrypt]\nmac = true\n")
    assert status == 1 and {f["code"] for f in findings} == {"no-key"}
    files = {**GOOD, "sip.cfg": H + "static.auto_provision.aes_key_in_file = 1\n"}
    status, findings = check(tmp_path, capsys, files, extra="[provisioning.encrypt]\nmac = true\n")
    assert (status, findings) == (0, [])


def test_text_output_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup(tmp_path, {**GOOD, "sip.cfg": "b = 2\n"})
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "sip.cfg:1: error: first line is 'b = 2', not '#!version:1.0.0.1'" in out
    assert out.splitlines()[-1].startswith("1 error(s)")
    (tmp_path / "bad.toml").write_text("[server\n")
    assert main(["check", "--config", str(tmp_path / "bad.toml")]) == 2


def test_explain_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup(tmp_path, GOOD, extra="[provisioning.encrypt]\nmac = true\n")
    (tmp_path / "root" / "sip.cfg").write_text(H + "b = 2\nstatic.auto_provision.aes_key_in_file = 1\n")
    assert main(["explain", "--config", str(config), "--mac", "00-15-65-00-00-01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("phone 001565000001: SIP-T46U (model T46U), inventory row 2")
    assert "DHCPv4                       -  (dhcp4.enabled = false)" in out
    assert "Server URL: tftp://10.77.0.1/" in out
    order = re.findall(r"^ +\d+\. (\S+)$", out, re.MULTILINE)
    assert order == ["tftp://10.77.0.1/001565000001.boot", "tftp://10.77.0.1/y000000000000.boot",
                     "tftp://10.77.0.1/t46u.cfg", "tftp://10.77.0.1/sip.cfg", "tftp://10.77.0.1/001565000001.cfg",
                     "tftp://10.77.0.1/001565000001_Security.enc"]
    assert "found, rendered from {mac}.cfg.j2; encrypted; decrypted with the key from its _Security.enc" in out
    assert "account.1.password = ********    [001565000001.cfg:2]" in out and "pw-1" not in out
    assert "a = 1    [t46u.cfg:2]" in out


def test_explain_json_overrides_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {**GOOD, "sip.cfg": H + "a = 2\n"}
    config = setup(tmp_path, files)
    assert main(["explain", "--config", str(config), "--mac", "001565000001", "--json", "--show-secrets"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "T46U" and data["mechanism"] == "boot" and data["overwrite_mode"] == 1
    assert data["parameters"]["a"]["value"] == "2" and data["parameters"]["a"]["file"].endswith("sip.cfg")
    assert [(o["value"], o["line"]) for o in data["parameters"]["a"]["overridden"]] == [("1", 2)]
    assert data["parameters"]["account.1.password"]["value"] == "pw-1"
    assert [d["status"] for d in data["downloads"]] == ["missing", "found", "found", "found", "found"]
    assert data["downloads"][-1]["origin"] == "rendered:{mac}.cfg.j2"
    # another model, firmware without boot files, a given URL: the old mechanism
    assert main(["explain", "--config", str(config), "--mac", "001565000099", "--model", "T46U",
                 "--firmware", "83", "--url", "tftp://10.77.0.1/", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mechanism"] == "old" and [d["url"].rsplit("/", 1)[1] for d in data["downloads"]] == [
        "y000000000108.cfg", "001565000099.cfg"]


def test_explain_usage_errors(tmp_path: Path) -> None:
    config = setup(tmp_path, GOOD)
    assert main(["explain", "--config", str(config), "--mac", "nope"]) == 2
    assert main(["explain", "--config", str(config), "--mac", "001565000099"]) == 2  # not in the inventory
    assert main(["explain", "--config", str(config), "--mac", "001565000099", "--model", "T99"]) == 2
