"""The phone model (bootstrapd/provisioning/phone.py) on fixture trees, one rule of the guide per test.

A tree is a dict URL -> bytes; the fetcher answers from it and records what the phone asked for, in order.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.models import table
from bootstrapd.provisioning.phone import Kind, Outcome, Phone, Session, join, run, server_base

MAC = "001565aabbcc"
H = "#!version:1.0.0.1\n"
S = "tftp://srv/"


def phone(model: str = "T46U", **kw: object) -> Phone:
    found = table().find(model)
    assert found is not None
    return Phone(MAC, found, **kw)  # type: ignore[arg-type]


class Tree:
    def __init__(self, files: Mapping[str, str | bytes]) -> None:
        self.files = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        self.asked: list[str] = []

    def __call__(self, url: str) -> bytes | None:
        self.asked.append(url)
        return self.files.get(url)


def provision(files: Mapping[str, str | bytes], p: Phone | None = None, url: str = S) -> tuple[Outcome, Tree]:
    tree = Tree(files)
    return run(p or phone(), url, tree), tree


def values(out: Outcome) -> dict[str, str]:
    return {k: p.value for k, p in out.params.items() if any(a.applied for a in p.history)}


# -- download order ("Downloading Boot, Configuration and Resource Files") -------------------------------------

def test_mac_boot_file_first_and_then_only_its_includes() -> None:
    out, tree = provision({
        f"{S}{MAC}.boot": H + 'include:config "mine.cfg"\n',
        f"{S}y000000000000.boot": H + 'include:config "common.cfg"\n',
        f"{S}mine.cfg": H + "a = mac\n", f"{S}common.cfg": H + "a = common\n",
    })
    assert tree.asked == [f"{S}{MAC}.boot", f"{S}mine.cfg"]
    assert out.boot == f"{S}{MAC}.boot" and values(out) == {"a": "mac"}


def test_common_boot_file_when_there_is_no_mac_boot_file() -> None:
    out, tree = provision({f"{S}y000000000000.boot": H + "include:config <one.cfg>\ninclude:config \"two.cfg\"\n",
                           f"{S}one.cfg": H + "a = 1\nb = 1\n", f"{S}two.cfg": H + "b = 2\n"})
    assert tree.asked == [f"{S}{MAC}.boot", f"{S}y000000000000.boot", f"{S}one.cfg", f"{S}two.cfg"]
    assert values(out) == {"a": "1", "b": "2"}  # later files override earlier ones
    param = out.params["b"]
    assert (param.final.file, param.final.line) == (f"{S}two.cfg", 2)
    assert [(a.value, a.file, a.line) for a in param.overridden] == [("1", f"{S}one.cfg", 3)]


def test_old_mechanism_without_boot_files_common_cfg_then_mac_cfg() -> None:
    out, tree = provision({f"{S}y000000000108.cfg": H + "a = common\nb = common\n", f"{S}{MAC}.cfg": H + "a = mac\n"})
    assert tree.asked == [f"{S}{MAC}.boot", f"{S}y000000000000.boot", f"{S}y000000000108.cfg", f"{S}{MAC}.cfg"]
    assert out.mechanism == "old" and values(out) == {"a": "mac", "b": "common"}


def test_firmware_without_boot_files_uses_the_old_mechanism() -> None:
    out, tree = provision({f"{S}y000000000000.boot": H + 'include:config "x.cfg"\n'}, phone("T46U", firmware=83))
    assert tree.asked == [f"{S}y000000000108.cfg", f"{S}{MAC}.cfg"]  # T46U reads boot files from 84
    assert out.mechanism == "old"


def test_a_boot_file_without_header_is_not_used() -> None:
    out, _ = provision({f"{S}{MAC}.boot": 'include:config "x.cfg"\n',
                           f"{S}y000000000000.boot": H + 'include:config "y.cfg"\n', f"{S}y.cfg": H + "a = 1\n"})
    assert out.boot == f"{S}y000000000000.boot" and values(out) == {"a": "1"}
    assert any(f.code == "missing-header" for f in out.findings)


def test_a_cfg_without_header_is_ignored() -> None:
    out, _ = provision({f"{S}y000000000000.boot": H + 'include:config "x.cfg"\n', f"{S}x.cfg": "a = 1\n"})
    assert values(out) == {} and "ignored" in out.downloads[-1].note


def test_resource_files_after_the_configs_and_mac_local_last() -> None:
    out, tree = provision({
        f"{S}y000000000000.boot": H + 'include:config "a.cfg"\n',
        f"{S}a.cfg": H + "static.auto_dst.url = res/AutoDST.xml\nringtone.url = http://other/ring.wav\n"
                         "static.auto_provision.custom.sync = 1\nstatic.auto_provision.custom.protect = 1\n",
        f"{S}res/AutoDST.xml": "<x/>",
    })
    assert tree.asked[-3:] == [f"{S}res/AutoDST.xml", "http://other/ring.wav", f"{S}{MAC}-local.cfg"]
    kinds = [d.kind for d in out.downloads]
    assert kinds[-3:] == [Kind.RESOURCE, Kind.RESOURCE, Kind.LOCAL]
    assert [f.code for f in out.findings] == ["resource-missing"]


# -- MAC-local precedence ("Using MAC-local CFG File") --------------------------------------------------------

def test_mac_local_overrides_everything_when_protected() -> None:
    base = {f"{S}y000000000000.boot": H + 'include:config "a.cfg"\ninclude:config "$MAC.cfg"\n',
            f"{S}a.cfg": H + "static.auto_provision.custom.sync = 1\nstatic.auto_provision.custom.protect = 1\n",
            f"{S}{MAC}.cfg": H + "ring = server\n", f"{S}{MAC}-local.cfg": H + "ring = user\n"}
    out, _ = provision(base)
    assert values(out)["ring"] == "user"
    assert out.params["ring"].final.note.startswith("MAC-local")
    unprotected = dict(base)
    unprotected[f"{S}a.cfg"] = H + "static.auto_provision.custom.sync = 1\n"
    out, _ = provision(unprotected)
    assert values(out)["ring"] == "server" and "not applied" in out.downloads[-1].note


def test_mac_local_comes_from_the_sync_path_and_is_not_asked_without_sync() -> None:
    out, tree = provision({f"{S}y000000000000.boot": H + 'include:config "a.cfg"\n',
                           f"{S}a.cfg": H + "static.auto_provision.custom.sync = 1\n"
                                            "static.auto_provision.custom.sync.path = http://up/store\n"})
    assert tree.asked[-1] == f"http://up/store/{MAC}-local.cfg"
    out, tree = provision({f"{S}y000000000000.boot": H})
    assert not any("local" in url for url in tree.asked)
    assert any("not requested" in n for n in out.notes)


# -- model filters, append and exclude mode ("Editing Common Boot File") --------------------------------------

BOOT_MODELS = H + ('[T46U]include:config "t46u.cfg"\n[T48U,T46U]include:config "t4x.cfg"\n'
                   '[T54W]include:config "t54w.cfg"\ninclude:config "all.cfg"\n')


def test_append_mode_downloads_own_model_files_and_unspecified_ones_in_order() -> None:
    files = {f"{S}y000000000000.boot": BOOT_MODELS, f"{S}t46u.cfg": H, f"{S}t4x.cfg": H, f"{S}t54w.cfg": H,
             f"{S}all.cfg": H}
    _, tree = provision(files)
    assert tree.asked[2:] == [f"{S}t46u.cfg", f"{S}t4x.cfg", f"{S}all.cfg"]
    _, tree = provision(files, phone("T54W"))
    assert tree.asked[2:] == [f"{S}t54w.cfg", f"{S}all.cfg"]
    _, tree = provision(files, phone("T23G"))
    assert tree.asked[2:] == [f"{S}all.cfg"]


def test_exclude_mode_skips_unspecified_files_when_own_model_files_are_found() -> None:
    files = {f"{S}y000000000000.boot": BOOT_MODELS + "specific_model.excluded_mode = 1\n",
             f"{S}t46u.cfg": H + "a = t46u\n", f"{S}all.cfg": H + "a = all\n"}
    out, tree = provision(files)
    assert tree.asked[2:] == [f"{S}t46u.cfg", f"{S}t4x.cfg"]
    assert values(out) == {"a": "t46u"} and out.excluded_mode == 1


def test_exclude_mode_falls_back_to_unspecified_files_when_no_own_file_is_found() -> None:
    files = {f"{S}y000000000000.boot": BOOT_MODELS + "specific_model.excluded_mode = 1\n", f"{S}all.cfg": H + "a = 1\n"}
    out, tree = provision(files)  # t46u.cfg and t4x.cfg are named for the T46U but not on the server
    assert tree.asked[2:] == [f"{S}t46u.cfg", f"{S}t4x.cfg", f"{S}all.cfg"]
    assert values(out) == {"a": "1"}
    _, tree = provision(files, phone("T23G"))  # no model-specific line at all
    assert tree.asked[2:] == [f"{S}all.cfg"]


def test_exclude_mode_is_append_mode_on_models_without_it() -> None:
    files = {f"{S}y000000000000.boot": BOOT_MODELS + "specific_model.excluded_mode = 1\n", f"{S}all.cfg": H,
             f"{S}t46u.cfg": H}
    out, tree = provision(files, phone("T46U", firmware=84))
    assert tree.asked[2:] == [f"{S}t46u.cfg", f"{S}t4x.cfg"]  # the T46U has exclude mode from 84
    out, tree = provision(files, phone("W52P"))  # no prefix name, no exclude mode
    assert tree.asked[2:] == [f"{S}all.cfg"] and not out.exclude_supported


def test_model_prefixes_in_cfg_lines() -> None:
    files = {f"{S}y000000000000.boot": H + 'include:config "a.cfg"\n',
             f"{S}a.cfg": H + "x = all\n[T46U] x = t46u\n[T48U, T23G] x = other\n[T21P_E2]y = e2\n"}
    assert values(provision(files)[0]) == {"x": "t46u"}
    assert values(provision(files, phone("T23G"))[0]) == {"x": "other"}
    assert values(provision(files, phone("T21_E2"))[0]) == {"x": "all", "y": "e2"}  # T21P_E2 covers T21 E2


def test_model_prefixes_need_firmware_83() -> None:
    files = {f"{S}y000000000000.boot": H + 'include:config "a.cfg"\n', f"{S}a.cfg": H + "[T46S] x = 1\n"}
    assert values(provision(files, phone("T46S", firmware=83))[0]) == {"x": "1"}
    assert values(provision(files, phone("T46S", firmware=82))[0]) == {}


# -- URLs: relative, absolute, wildcards ----------------------------------------------------------------------

def test_includes_are_relative_to_the_boot_file_or_absolute_on_another_host_or_scheme() -> None:
    files = {"tftp://srv/T46U/y000000000000.boot": H + 'include:config "../sip.cfg"\ninclude:config "sub dir/a.cfg"'
             '\ninclude:config <http://other:8080/x/b.cfg>\n'}
    _, tree = provision(files, url="tftp://srv/T46U/")
    assert tree.asked[2:] == ["tftp://srv/sip.cfg", "tftp://srv/T46U/sub dir/a.cfg", "http://other:8080/x/b.cfg"]


def test_pn_and_mac_wildcards() -> None:
    _, tree = provision({}, url="tftp://srv/$PN")
    assert tree.asked[0] == f"tftp://srv/T46U/{MAC}.boot"
    _, tree = provision({}, phone("T58A"), url="http://srv/prov/$PN/")
    assert tree.asked[0] == f"http://srv/prov/T58/{MAC}.boot"
    _, tree = provision({}, phone("T46U", preset={"static.auto_provision.url_wildcard.pn": "desk"}), url="tftp://s/$PN/")
    assert tree.asked[0] == f"tftp://s/desk/{MAC}.boot"


def test_a_server_url_naming_a_boot_file_is_the_only_boot_file_asked_for() -> None:
    out, tree = provision({}, url="tftp://srv/$PN/$MAC.boot")
    assert tree.asked == [f"tftp://srv/T46U/{MAC}.boot"] and out.notes


def test_mac_in_an_include_url() -> None:
    _, tree = provision({f"{S}y000000000000.boot": H + 'include:config "$MAC.cfg"\n'})
    assert tree.asked[-1] == f"{S}{MAC}.cfg"


def test_url_helpers() -> None:
    assert server_base("10.0.0.1") == ("tftp://10.0.0.1/", None)
    assert server_base("http://h/dir") == ("http://h/dir/", None)
    assert server_base("http://h/d/x.boot") == ("http://h/d/", "http://h/d/x.boot")
    assert join("tftp://h/a/b.boot", "../c.cfg") == "tftp://h/c.cfg"
    assert join("ftp://u:p@h/a/", "c.cfg") == "ftp://u:p@h/a/c.cfg"


# -- overwrite mode -------------------------------------------------------------------------------------------

def test_overwrite_mode_blank_values_set_the_factory_default_or_keep_the_earlier_value() -> None:
    body = 'include:config "a.cfg"\ninclude:config "b.cfg"\n'
    files: dict[str, str | bytes] = {f"{S}a.cfg": H + "x = 1\n", f"{S}b.cfg": H + "x =\n"}
    out, _ = provision({**files, f"{S}y000000000000.boot": H + body})  # default: overwrite_mode = 1
    assert out.overwrite_mode == 1 and values(out) == {"x": ""} and "factory default" in out.params["x"].final.note
    out, _ = provision({**files, f"{S}y000000000000.boot": H + body + "overwrite_mode = 0\n"})
    assert out.overwrite_mode == 0 and values(out) == {"x": "1"}
    assert "kept" in out.params["x"].history[-1].note


# -- encrypted files (compatibility mode) ---------------------------------------------------------------------

KEY = "ljB7jiDIQQ7XD888"


def test_an_encrypted_mac_file_with_its_key_file() -> None:
    plain = H + "account.1.password = s3cret\n"
    files: dict[str, str | bytes] = {
             f"{S}y000000000000.boot": H + 'include:config "a.cfg"\ninclude:config "$MAC.cfg"\n',
             f"{S}a.cfg": H + "static.auto_provision.aes_key_in_file = 1\n",
             f"{S}{MAC}.cfg": yealink_aes.encrypt(plain.encode(), KEY),
             f"{S}{MAC}_Security.enc": yealink_aes.encrypt_key(KEY)}
    out, tree = provision(files)
    assert tree.asked[-2:] == [f"{S}{MAC}.cfg", f"{S}{MAC}_Security.enc"]
    assert values(out)["account.1.password"] == "s3cret"
    assert out.downloads[-2].encrypted and "decrypted" in out.downloads[-2].note


def test_an_encrypted_file_with_the_phones_configured_key_or_without_any_key() -> None:
    files: dict[str, str | bytes] = {f"{S}y000000000000.boot": H + 'include:config "$MAC.cfg"\n',
             f"{S}{MAC}.cfg": yealink_aes.encrypt((H + "a = 1\n").encode(), KEY)}
    out, _ = provision(files, phone(preset={"static.auto_provision.aes_key_16.mac": KEY}))
    assert values(out) == {"a": "1"}
    out, _ = provision(files)
    assert values(out) == {} and [f.code for f in out.findings] == ["no-key"]


# -- stepping it from a network client ------------------------------------------------------------------------

def test_session_is_driven_one_request_at_a_time() -> None:
    tree = Tree({f"{S}y000000000000.boot": H + 'include:config "a.cfg"\n', f"{S}a.cfg": H + "a = 1\n"})
    session = Session(phone(), S)
    request = session.start()
    seen = []
    while request is not None:
        seen.append(request.url)
        request = session.feed(tree(request.url))
    assert seen == tree.asked and session.outcome is not None and values(session.outcome) == {"a": "1"}


def test_model_table() -> None:
    models = table()
    t46u = models.find("SIP-T46U")
    assert t46u is not None and t46u.common_cfg == "y000000000108.cfg" and t46u.prefix == "T46U"
    assert models.find("t21 e2") is models.find("T21_E2")
    assert {m.id for m in models.by_hardware_id(77)} == {"W60P", "W53P", "CP930W_BASE"}
    assert "T21P_E2" in models.prefix_names and "W52P" not in models.prefix_names
    assert len(models.prefix_names) == 35  # the guide's list of valid [MODEL] names


# -- arbitrary files from the network never break the model ---------------------------------------------------

@given(st.dictionaries(st.sampled_from([f"{S}{MAC}.boot", f"{S}y000000000000.boot", f"{S}a.cfg", f"{S}{MAC}.cfg",
                                        f"{S}y000000000108.cfg", f"{S}{MAC}_Security.enc"]),
                       st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: (H + t).encode())
                                 ), max_size=6),
       st.sampled_from(["T46U", "W52P", "T21_E2"]))
def test_arbitrary_files_give_an_outcome_never_an_exception(files: dict[str, bytes], model: str) -> None:
    boot = files.get(f"{S}y000000000000.boot")
    if boot is not None:
        files[f"{S}y000000000000.boot"] = boot + b'\ninclude:config "a.cfg"\ninclude:config "$MAC.cfg"\n'
    out, _ = provision(files, phone(model, preset={"static.auto_provision.aes_key_in_file": "1"}))
    assert out.mechanism in ("boot", "old")


@given(st.sampled_from(["static.auto_dst.url", "custom_softkey_dialing.url", "remote_phonebook.data.1.url",
                        "account.1.password", "static.firmware.url", "ringtone.url.x", ""]) | st.text(max_size=30))
def test_resource_keys_match_as_their_patterns_say(key: str) -> None:
    from fnmatch import fnmatchcase

    keys = table().resource_keys
    assert table().is_resource_key(key) == any(fnmatchcase(key, pattern) for pattern in keys)
