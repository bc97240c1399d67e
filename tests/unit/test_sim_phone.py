"""One simulated phone from power-on to provisioned, against the real DHCPv4 and PnP server cores and the
provisioning model, on a virtual clock: the URL in the guide's priority, the model's downloads and values (the same
as the model run directly), every failure with its reason, the MD5 check on a second boot, the MAC-local upload."""

from __future__ import annotations

import random
from collections.abc import Callable

from bootstrapd.clock import Now
from bootstrapd.pnp.responder import Responder
from bootstrapd.pnp.settings import PnpSettings
from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.models import Model, table
from bootstrapd.provisioning.phone import Phone, run
from bootstrapd.sim import result as results
from bootstrapd.sim.identity import Identity
from bootstrapd.sim.phone import Configure, Get, Options, Put, SendDhcp, SendSip, SimPhone, Stage
from bootstrapd.sim.result import Result
from tests.unit.dhcp4_helpers import dora, mac, make_server

MAC = "001565aabbcc"
def _model(name: str) -> Model:
    model = table().find(name)
    assert model is not None
    return model


T46U = _model("T46U")
BOOT = b'#!version:1.0.0.1\n[T46U]include:config "y000000000108.cfg"\ninclude:config "sip.cfg"\n' \
       b'include:config "$MAC.cfg"\noverwrite_mode = 1\n'
TREE = {
    "y000000000000.boot": BOOT,
    "y000000000108.cfg": b"#!version:1.0.0.1\nlang.gui = English\n",
    "sip.cfg": b"#!version:1.0.0.1\naccount.1.sip_server.1.address = 10.77.0.1\n",
    f"{MAC}.cfg": b"#!version:1.0.0.1\naccount.1.user_name = 4001\naccount.1.password = s3cret\n",
}


class World:
    """The network around one phone: the DHCPv4 server core, the PnP responder core (or silence), a file tree."""

    def __init__(self, tree: dict[str, bytes], *, pnp: bool = True, dhcp_extra: str = "",
                 answer: Callable[[str], Result] | None = None, pnp_url: str = "tftp://{ipv4}/") -> None:
        self.dhcp = make_server(dhcp_extra)
        self.pnp = Responder(PnpSettings(enabled=True, url=pnp_url), ("10.77.0.1", 40000),
                             {"ipv4": "10.77.0.1"}) if pnp else None
        self.tree = tree
        self.answer = answer
        self.requests: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.now = 0.0

    def fetch(self, url: str) -> Result:
        self.requests.append(url)
        if self.answer is not None:
            return self.answer(url)
        name = url.split("://", 1)[1].split("/", 1)[1]
        data = self.tree.get(name)
        if data is None:
            return Result(None, results.NOT_FOUND, "TFTP error 1: File not found")
        return Result(data, results.OK)

    def boot(self, phone: SimPhone, limit: float = 600.0) -> SimPhone:
        actions = phone.power_on(self.now)
        while not phone.done:
            while actions:
                action, *actions = actions
                self.now += 0.001
                if isinstance(action, SendDhcp):
                    reply = self.dhcp.handle(action.payload, ("0.0.0.0", 68), Now(self.now, self.now))
                    if reply is not None and reply.data is not None:
                        actions += phone.on_dhcp(reply.data, self.now)
                elif isinstance(action, Configure):
                    actions += phone.configured(self.now)
                elif isinstance(action, SendSip):
                    if self.pnp is None:
                        continue
                    assert phone.lease is not None
                    source = (str(phone.lease.address), 5060)
                    for out in self.pnp.receive(action.data, source, self.now):
                        actions += phone.on_sip(out.data, ("10.77.0.1", 40000), self.now)
                elif isinstance(action, Get):
                    actions += phone.fetched(self.fetch(action.url), self.now)
                elif isinstance(action, Put):
                    self.uploads[action.url] = action.data
                    outcome = self.answer(action.url) if self.answer else Result(b"", results.OK)
                    actions += phone.fetched(outcome, self.now)
            if phone.done:
                break
            assert phone.deadline is not None, f"stuck in {phone.stage}"
            assert phone.deadline <= limit, "no progress within the limit"
            self.now = max(self.now, phone.deadline)
            actions = phone.on_timer(self.now)
        return phone


def sim_phone(options: Options | None = None, preset: dict[str, str] | None = None, mac: str = MAC,
              last_md5: dict[str, str] | None = None) -> SimPhone:
    return SimPhone(Identity(mac, T46U, None, preset or {}), options or Options(), random.Random(5),
                    last_md5=last_md5 or {})


def test_a_phone_is_provisioned_as_the_model_says() -> None:
    world = World(TREE)
    phone = world.boot(sim_phone())
    assert phone.stage is Stage.PROVISIONED and phone.failure == ""
    assert phone.source is not None and phone.source.name == "PnP (SIP NOTIFY)"
    assert phone.url == "tftp://10.77.0.1/" and phone.lease is not None
    model = run(Phone(MAC, T46U), "tftp://10.77.0.1/", lambda url: TREE.get(url.split("/", 3)[3]))
    assert phone.outcome is not None
    assert [d.url for d in phone.outcome.downloads] == [d.url for d in model.downloads] == world.requests
    assert {k: p.value for k, p in phone.outcome.params.items()} == {k: p.value for k, p in model.params.items()}
    assert phone.effective() == {"lang.gui": "English", "account.1.sip_server.1.address": "10.77.0.1",
                                 "account.1.user_name": "4001", "account.1.password": "********"}
    assert phone.effective(show_secrets=True)["account.1.password"] == "s3cret"
    assert set(phone.stage_times()) == {"dhcp", "pnp", "download"}
    assert phone.times["power_on"] <= phone.times["bound"] <= phone.times["url"] <= phone.times["done"]
    record = phone.record(0.0)
    assert record["provisioned"] and record["url_source"] == "PnP (SIP NOTIFY)"
    assert [t["status"] for t in record["transfers"]] == ["not-found", "ok", "ok", "ok", "ok"]
    assert "s3cret" not in str(record)


def test_without_a_pnp_answer_the_phone_waits_then_takes_option_66() -> None:
    world = World(TREE, pnp=False)
    phone = world.boot(sim_phone(Options(pnp_wait=5.0)))
    assert phone.stage is Stage.PROVISIONED
    assert phone.source is not None and phone.source.name == "DHCPv4 option 66"
    assert phone.pnp is not None and phone.pnp.subscribes == 4  # 0, 0.5, 1.5, 3.5 s
    assert 5.0 <= phone.stage_times()["pnp"] < 5.1
    assert phone.sources[0].note == "PnP: no answer to 4 SUBSCRIBEs in 5 s"


def test_the_custom_option_wins_over_66_only_when_the_phone_has_it() -> None:
    world = World(TREE, pnp=False, dhcp_extra="")
    phone = world.boot(sim_phone(Options(pnp=False, custom_option=160)))
    assert phone.source is not None and phone.source.name == "DHCPv4 custom option 160"
    assert phone.url == "http://10.77.0.1/p/"
    assert world.requests[0] == f"http://10.77.0.1/p/{MAC}.boot"
    other = World(TREE, pnp=False).boot(sim_phone(Options(pnp=False)))
    assert other.source is not None and other.source.name == "DHCPv4 option 66"


def test_option_43_and_then_the_flash_url_are_the_last_sources() -> None:
    no_66 = "[dhcp4.class.yealink.options]\n66 = \"\"\n43 = \"http://10.77.0.1/y/\"\n"
    phone = World(TREE, pnp=False, dhcp_extra=no_66).boot(sim_phone(Options(pnp=False)))
    assert phone.source is not None and phone.source.name == "DHCPv4 option 43"
    nothing = "[dhcp4.class.yealink.options]\n66 = \"\"\n"
    flash = World(TREE, pnp=False, dhcp_extra=nothing).boot(
        sim_phone(Options(pnp=False, flash_url="tftp://10.77.0.9/")))
    assert flash.source is not None and flash.source.name == "phone flash" and flash.url == "tftp://10.77.0.9/"
    lost = World(TREE, pnp=False, dhcp_extra=nothing).boot(sim_phone(Options(pnp_wait=2.0)))
    assert lost.stage is Stage.FAILED
    assert lost.failure.startswith("no provisioning URL (PnP (SIP NOTIFY): PnP: no answer to 3 SUBSCRIBEs in 2 s;")


def test_no_offer_fails_with_the_reason_after_the_phone_s_retries() -> None:
    world = World(TREE, dhcp_extra="", pnp=False)
    # A pool of one address, taken by another client first: nobody offers the phone anything.
    world.dhcp = make_server("", base="[server]\ninterface = \"eth1\"\n[dhcp4]\nrange = \"10.77.0.100-10.77.0.100\"\n")
    dora(world.dhcp, mac(1))
    phone = world.boot(sim_phone())
    assert phone.stage is Stage.FAILED and phone.failure == "DHCP: no OFFER after 5 DISCOVERs"
    assert phone.dhcp is not None and phone.dhcp.retransmissions == 4
    assert 4 + 8 + 16 + 32 + 64 - 5 <= phone.times["done"] <= 4 + 8 + 16 + 32 + 64 + 5


def test_a_missing_include_fails_the_phone_with_its_name() -> None:
    tree = {k: v for k, v in TREE.items() if k != "sip.cfg"}
    phone = World(tree).boot(sim_phone())
    assert phone.stage is Stage.FAILED
    assert phone.failure == "sip.cfg not found (TFTP error 1: File not found)"


def test_a_timeout_or_a_401_fails_the_phone_even_where_the_model_goes_on() -> None:
    def answer(url: str) -> Result:
        if url.endswith(".boot") and MAC in url:
            return Result(None, results.TIMEOUT, "TFTP timeout: no answer after 5 tries of 5 s", 4)
        name = url.split("/", 3)[3]
        return Result(TREE[name], results.OK) if name in TREE else Result(None, results.NOT_FOUND, "404")

    phone = World(TREE, answer=answer).boot(sim_phone())
    assert phone.stage is Stage.FAILED
    assert phone.failure == f"{MAC}.boot: TFTP timeout: no answer after 5 tries of 5 s"
    assert phone.outcome is not None and phone.outcome.boot == "tftp://10.77.0.1/y000000000000.boot"

    def unauthorized(url: str) -> Result:
        return Result(None, results.AUTH, "HTTP 401 Unauthorized")

    denied = World(TREE, answer=unauthorized, pnp_url="http://floor3:wrong@{ipv4}/T46U_1/").boot(sim_phone())
    assert denied.failure == f"T46U_1/{MAC}.boot: HTTP 401 Unauthorized"
    assert denied.record(0.0)["url"] == "http://floor3:********@10.77.0.1/T46U_1/"


def test_an_encrypted_file_is_decrypted_with_the_key_the_phone_has_or_fails() -> None:
    key = "0123456789abcdef"
    tree = dict(TREE)
    tree[f"{MAC}.cfg"] = yealink_aes.encrypt(TREE[f"{MAC}.cfg"], key)
    tree[f"{MAC}_Security.enc"] = yealink_aes.encrypt_key(key)
    with_key = World(tree).boot(sim_phone(preset={"static.auto_provision.aes_key_in_file": "1"}))
    assert with_key.stage is Stage.PROVISIONED
    assert with_key.effective()["account.1.user_name"] == "4001"
    without = World(tree).boot(sim_phone())
    assert without.stage is Stage.FAILED and without.failure.startswith(f"{MAC}.cfg: encrypted, but the phone has")
    wrong = World(tree).boot(sim_phone(preset={"static.auto_provision.aes_key_16.mac": "fedcba9876543210"}))
    assert wrong.stage is Stage.FAILED and "ignored: no header line" not in wrong.failure
    assert wrong.failure.startswith(f"{MAC}.cfg: first line is")


def test_second_boot_md5_check_completes_without_update_and_sees_a_change() -> None:
    first = World(TREE).boot(sim_phone())
    assert first.outcome is not None and first.outcome.updated
    md5 = first.outcome.cfg_md5()
    assert len(md5) == 3 and all(len(v) == 32 for v in md5.values())
    again = World(TREE).boot(sim_phone(last_md5=md5))
    assert again.stage is Stage.PROVISIONED and again.outcome is not None and not again.outcome.updated
    assert again.effective() == first.effective()
    changed = dict(TREE, **{"sip.cfg": TREE["sip.cfg"] + b"account.1.sip_server.1.port = 5062\n"})
    third = World(changed).boot(sim_phone(last_md5=md5))
    assert third.outcome is not None and third.outcome.updated


def test_second_boot_asks_for_its_address_again_init_reboot() -> None:
    world = World(TREE)
    first = world.boot(sim_phone())
    assert first.lease is not None and first.dhcp is not None and first.dhcp.init_reboot == ""
    again = sim_phone()
    again.previous_address = str(first.lease.address)
    world.boot(again)  # the same server: it still holds the lease
    assert again.stage is Stage.PROVISIONED and again.dhcp is not None and again.lease is not None
    assert again.dhcp.init_reboot == "ack" and again.dhcp.sent == 1  # one REQUEST, no DISCOVER
    assert again.lease.address == first.lease.address and again.record(0.0)["dhcp"]["init_reboot"] == "ack"
    assert again.effective() == first.effective()
    off = sim_phone(Options(init_reboot=False))
    off.previous_address = str(first.lease.address)
    world.boot(off)
    assert off.dhcp is not None and off.dhcp.init_reboot == "" and off.dhcp.sent == 2  # DISCOVER, REQUEST


def test_the_mac_local_file_is_uploaded_where_configured() -> None:
    tree = dict(TREE, **{"sip.cfg": TREE["sip.cfg"] + b"static.auto_provision.custom.sync = 1\n"})
    world = World(tree)
    phone = world.boot(sim_phone(Options(local_cfg="features.dnd.enable = 1")))
    assert phone.stage is Stage.PROVISIONED
    url = f"tftp://10.77.0.1/{MAC}-local.cfg"
    assert world.uploads == {url: b"#!version:1.0.0.1\nfeatures.dnd.enable = 1\n"}
    assert "upload" in phone.stage_times() and phone.transfers[-1].kind == "upload"
    # Without sync = 1 nothing is uploaded.
    plain = World(TREE)
    plain.boot(sim_phone(Options(local_cfg="features.dnd.enable = 1")))
    assert plain.uploads == {}

    def refuse(url: str) -> Result:
        if url.endswith("-local.cfg") and url in world.uploads:
            return Result(None, results.REFUSED, "TFTP error 2: access violation")
        name = url.split("/", 3)[3]
        return Result(tree[name], results.OK) if name in tree else Result(None, results.NOT_FOUND, "not found")

    world = World(tree, answer=refuse)
    failed = world.boot(sim_phone(Options(local_cfg="features.dnd.enable = 1")))
    assert failed.failure == f"upload of {MAC}-local.cfg: TFTP error 2: access violation"


def test_dhcp_only_stops_at_the_ack() -> None:
    world = World(TREE)
    phone = world.boot(sim_phone(Options(dhcp_only=True)))
    assert phone.stage is Stage.PROVISIONED and phone.lease is not None and world.requests == []
    assert phone.stage_times() == {"dhcp": phone.times["bound"] - phone.times["power_on"]}


def test_a_url_option_terminated_by_a_nul_is_read_as_the_url() -> None:
    from bootstrapd.provisioning.discovery import chosen, received_sources

    # dnsmasq sends option 66 as "tftp://10.77.0.1/\0" (found by the boot storm benchmark).
    sources = received_sources(pnp=None, dhcp4={66: b"tftp://10.77.0.1/\0"}, dhcp6_59=None)
    source = chosen(sources)
    assert source is not None and source.name == "DHCPv4 option 66" and source.url == "tftp://10.77.0.1/"


def test_the_summary_is_made_from_records_and_groups_failures_by_reason() -> None:
    from bootstrapd.sim.report import summary

    other = "001565aabbcd"
    world = World(TREE)
    phones = [world.boot(sim_phone()), world.boot(sim_phone(mac=other)), world.boot(sim_phone(mac="001565aabbce"))]
    records = [p.record(0.0) for p in phones]
    whole = summary(records)
    assert (whole["phones"], whole["provisioned"], whole["failed"]) == (3, 1, 2)
    [failure] = whole["failures"]  # the same reason for both, with the phone's own MAC written <mac>
    assert failure["reason"] == "<mac>.cfg not found (TFTP error 1: File not found)" and failure["count"] == 2
    assert failure["phones"] == [f"{other} (T46U)", "001565aabbce (T46U)"]
    assert whole["time_to_provisioned"]["p50"] == phones[0].elapsed()
    assert whole["last_provisioned"] == records[0]["timeline"]["done"]
    assert whole["transfers"] == {"ok": 4 + 3 * 2, "not-found": 3 + 2}
