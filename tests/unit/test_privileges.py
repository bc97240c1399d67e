"""The start-up capability check: what each enabled service needs, read against /proc/self/status."""

from __future__ import annotations

from pathlib import Path

from bootstrapd import config, privileges
from bootstrapd.privileges import Need

REPO = Path(__file__).resolve().parents[2]
LAB = config.load(REPO / "configs" / "lab.toml")  # every service enabled

STATUS = """Name:\tbootstrapd
Umask:\t0077
CapInh:\t0000000000002400
CapPrm:\t{mask:016x}
CapEff:\t{mask:016x}
CapBnd:\t0000000000002400
CapAmb:\t0000000000002400
"""
BIND, RAW = 1 << 10, 1 << 13


def _config(body: str) -> config.Settings:
    return config.loads('[server]\ninterface = "eth1"\n[dhcp4]\nenabled = false\n' + body)


def test_each_service_and_port_is_named() -> None:
    assert privileges.needs(LAB) == [
        Need("dhcp4", "CAP_NET_BIND_SERVICE", "UDP port 67"),
        Need("dhcp6", "CAP_NET_BIND_SERVICE", "UDP port 547"),
        Need("tftp", "CAP_NET_BIND_SERVICE", "UDP port 69"),
        Need("http", "CAP_NET_BIND_SERVICE", "TCP port (http.port) 80"),  # no certificate: no tls_port
        Need("ftp", "CAP_NET_BIND_SERVICE", "TCP port (ftp.port) 21"),
        Need("dhcp4", "CAP_NET_RAW", "a packet socket for unicast OFFERs and ACKs, RFC 2131 4.1"),
    ]  # PnP's 5060 needs nothing


def test_ports_follow_the_configuration_and_the_namespace_sysctl() -> None:
    assert privileges.needs(_config("[tftp]\nenabled = true\nport = 6969\n")) == []
    assert privileges.needs(_config("[pnp]\nenabled = true\nport = 506\nsource_port = 507\n")) == [
        Need("pnp", "CAP_NET_BIND_SERVICE", "UDP port 506, UDP source port 507")]
    # net.ipv4.ip_unprivileged_port_start = 0: no port is privileged, only the packet socket is.
    assert [n.capability for n in privileges.needs(LAB, port_start=0)] == ["CAP_NET_RAW"]


def test_the_sysctl_is_read_and_defaults_to_1024(tmp_path: Path) -> None:
    (tmp_path / "start").write_text("80\n")
    assert privileges.unprivileged_port_start(tmp_path / "start") == 80
    assert privileges.unprivileged_port_start(tmp_path / "absent") == 1024


def test_capeff_is_parsed() -> None:
    assert privileges.effective(STATUS.format(mask=BIND | RAW)) == 0x2400
    assert privileges.names(0x2400) == ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    assert privileges.names(1 << 21) == ["CAP_21"]


def test_a_missing_capability_is_named_with_its_services() -> None:
    assert privileges.problem(LAB, STATUS.format(mask=BIND | RAW), port_start=1024) is None
    message = privileges.problem(LAB, STATUS.format(mask=RAW), port_start=1024)
    assert message == (
        "missing capability CAP_NET_BIND_SERVICE: dhcp4 needs CAP_NET_BIND_SERVICE (UDP port 67); dhcp6 needs "
        "CAP_NET_BIND_SERVICE (UDP port 547); tftp needs CAP_NET_BIND_SERVICE (UDP port 69); http needs "
        "CAP_NET_BIND_SERVICE (TCP port (http.port) 80); ftp needs CAP_NET_BIND_SERVICE (TCP port (ftp.port) 21) "
        "(the unit systemd/bootstrapd.service grants it with AmbientCapabilities=)")
    message = privileges.problem(LAB, STATUS.format(mask=0), port_start=1024)
    assert message is not None and message.startswith("missing capabilities CAP_NET_BIND_SERVICE CAP_NET_RAW: ")
    assert "dhcp4 needs CAP_NET_RAW (a packet socket" in message


def test_nothing_to_check_without_proc() -> None:
    assert privileges.problem(LAB, "Name:\tx\n") is None


def test_root_gets_one_warning_naming_what_the_unit_grants() -> None:
    assert privileges.root_warning(LAB, euid=1000, port_start=1024) is None
    warning = privileges.root_warning(LAB, euid=0, port_start=1024)
    assert warning is not None
    assert warning.startswith("running as root: systemd/bootstrapd.service runs bootstrapd as an unprivileged dynamic "
                              "user with only CAP_NET_BIND_SERVICE CAP_NET_RAW, ")
    assert "tftp needs CAP_NET_BIND_SERVICE (UDP port 69)" in warning
    quiet = _config("[tftp]\nenabled = true\nport = 6969\n")
    assert "dynamic user with no capabilities, " in (privileges.root_warning(quiet, euid=0, port_start=1024) or "")


def test_http_https_and_ftp_ports_and_the_passive_range(tmp_path: Path) -> None:
    """80, 443 and 21 need CAP_NET_BIND_SERVICE; HTTPS only with a certificate; the passive range (at least 1024,
    ftp.passive_ports refuses less) needs nothing unless the namespace's unprivileged port start lies above it."""
    (tmp_path / "tls.crt").write_text("")  # read when the service starts; the setting only has to name a file
    http = f'[http]\nenabled = true\ntls_cert = "{tmp_path / "tls.crt"}"\ntls_key = "credential:tls.key"\n'
    settings = _config(http + '[ftp]\nenabled = true\npassive_ports = "30000-30099"\n')
    assert privileges.needs(settings) == [
        Need("http", "CAP_NET_BIND_SERVICE", "TCP port (http.port) 80, TCP port (http.tls_port) 443"),
        Need("ftp", "CAP_NET_BIND_SERVICE", "TCP port (ftp.port) 21"),
    ]
    assert privileges.needs(settings, port_start=30050)[-1] == Need(
        "ftp", "CAP_NET_BIND_SERVICE", "TCP port (ftp.port) 21, TCP ports (ftp.passive_ports) 30000-30099")
    high = _config('[http]\nenabled = true\nport = 8080\n[ftp]\nenabled = true\nport = 2121\n')
    assert privileges.needs(high) == []
    assert _config("[http]\nenabled = true\n").http.tls is False  # no certificate: nothing listens on 443
    assert privileges.needs(_config("[http]\nenabled = true\n")) == [
        Need("http", "CAP_NET_BIND_SERVICE", "TCP port (http.port) 80")]
    assert privileges.needs(_config("[http]\nenabled = false\n[ftp]\nenabled = false\n")) == []


def test_a_capture_needs_cap_net_raw() -> None:
    needs = privileges.needs(_config('[capture]\nfile = "/var/lib/bootstrapd/lab.pcap"\n'))
    assert [(n.service, n.capability) for n in needs] == [("capture", "CAP_NET_RAW")]
