"""A LAN in network namespaces: an appliance and phones on one bridge.

Topology (every name carries a per-run prefix, nothing is created in the root namespace)::

    <p>sw: bridge br0 ── veth ── <p>ap: eth1  10.77.0.1/24, fd77::1/64   (the appliance)
                     ├── veth ── <p>ap2: eth1 10.77.0.2/24, fd77::2/64   (a second one sharing its PostgreSQL)
                     ├── veth ── <p>ph1: eth0                             (phone 1, its own MAC)
                     └── veth ── <p>ph2: eth0 …

The veth pairs are created inside the switch namespace and their far ends moved straight into the appliance's or
phone's namespace, so no interface ever appears in the root namespace. :meth:`Lab.close` kills every process the
lab started and deletes the namespaces; it runs even when a test fails, and :func:`sweep_stale` removes what a
killed run left behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

PREFIX = "bdt"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def sweep_stale() -> None:
    """Delete lab namespaces whose creating process is gone (a run killed before its teardown)."""
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid_part = name[len(PREFIX):].split("x", 1)[0]
        if pid_part.isdigit() and not os.path.exists(f"/proc/{pid_part}"):
            _ip("netns", "delete", name, check=False)


@dataclass
class Node:
    lab: Lab
    ns: str
    ifname: str
    mac: str
    ipv4: str | None = None
    ipv6: str | None = None
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 60, check: bool = False,
            input: str | bytes | None = None, text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run to completion. Output goes through temporary files, not pipes: a client that daemonises (dhclient)
        keeps its inherited descriptors open, and reading a pipe would wait for the daemon to exit."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(self.cmd(argv), stdout=out, stderr=err, timeout=timeout, check=False,
                                  input=input.encode() if isinstance(input, str) else input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        result: subprocess.CompletedProcess[Any] = subprocess.CompletedProcess(
            proc.args, proc.returncode,
            stdout.decode(errors="replace") if text else stdout,
            stderr.decode(errors="replace") if text else stderr)
        if check:
            result.check_returncode()
        return result

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.cmd(argv), start_new_session=True, **kwargs)
        self.procs.append(proc)
        self.lab.procs.append(proc)
        return proc

    def wait_udp_port(self, port: int, timeout: float = 10.0, proc: subprocess.Popen[Any] | None = None) -> None:
        """Wait until something in this namespace listens on UDP ``port`` (a peer server we started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            if self.run(["ss", "-Hlun", f"sport = :{port}"]).stdout.strip():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on UDP {port} in {self.ns}")

    @property
    def address(self) -> str:
        assert self.ipv4
        return self.ipv4.split("/")[0]

    @property
    def address6(self) -> str:
        assert self.ipv6
        return self.ipv6.split("/")[0]


class Lab:
    def __init__(self, prefix: str | None = None) -> None:
        if os.geteuid() != 0:
            raise PermissionError("the lab needs root (network namespaces)")
        if not shutil.which("ip"):
            raise FileNotFoundError("the lab needs iproute2's ip")
        self.prefix = prefix or f"{PREFIX}{os.getpid()}x{random.randrange(36**3):x}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.nodes: list[Node] = []
        self._veths = 0
        self.switch = self._namespace("sw")
        # IGMP snooping off on every bridge: a multicast SUBSCRIBE must reach the appliance without a querier.
        self._bridges: set[str] = set()
        self._bridge("br0")

    def _namespace(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", f"{key}=0"], check=False)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _bridge(self, name: str) -> None:
        if name in self._bridges:
            return
        _ip("-n", self.switch, "link", "add", name, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("-n", self.switch, "link", "set", name, "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.switch, "link", "set", name, "up")
        self._bridges.add(name)

    def _attach(self, ns: str, ifname: str, mac: str, mtu: int = 1500, bridge: str = "br0") -> None:
        self._bridge(bridge)
        self._veths += 1
        port = f"p{self._veths}"
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns)
        _ip("-n", self.switch, "link", "set", port, "master", bridge, "mtu", str(mtu), "up")
        _ip("-n", ns, "link", "set", ifname, "address", mac, "mtu", str(mtu), "up")

    def add_node(self, suffix: str, ifname: str, mac: str, ipv4: str | None = None, ipv6: str | None = None,
                 mtu: int = 1500, bridge: str = "br0") -> Node:
        ns = self._namespace(suffix)
        self._attach(ns, ifname, mac, mtu, bridge)
        if ipv4:
            _ip("-n", ns, "addr", "add", ipv4, "dev", ifname)
        if ipv6:
            _ip("-n", ns, "-6", "addr", "add", ipv6, "dev", ifname, "nodad")
        # Multicast (PnP SUBSCRIBE to 224.0.1.75) leaves through the lab interface.
        _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname, check=False)
        node = Node(self, ns, ifname, mac, ipv4, ipv6)
        self.nodes.append(node)
        return node

    def add_appliance(self, ipv4: str | None = "10.77.0.1/24", ipv6: str | None = "fd77::1/64",
                      mac: str = "02:77:00:00:00:01", mtu: int = 1500, suffix: str = "ap") -> Node:
        return self.add_node(suffix, "eth1", mac, ipv4, ipv6, mtu)

    def add_second_appliance(self) -> Node:
        """Another appliance on the same bridge (10.77.0.2, fd77::2): two boxes sharing one PostgreSQL."""
        return self.add_appliance("10.77.0.2/24", "fd77::2/64", "02:77:00:00:00:02", suffix="ap2")

    def add_phone(self, mac: str | None = None, ipv4: str | None = None, ipv6: str | None = None,
                  mtu: int = 1500, bridge: str = "br0") -> Node:
        index = sum(1 for n in self.nodes if n.ifname == "eth0") + 1
        mac = mac or f"00:15:65:77:{index >> 8:02x}:{index & 0xFF:02x}"
        return self.add_node(f"ph{index}", "eth0", mac, ipv4, ipv6, mtu, bridge)

    def add_interface(self, node: Node, ifname: str, mac: str, ipv4: str | None = None,
                      bridge: str = "br1") -> None:
        """A second interface on ``node``, on another bridge (another LAN the appliance must not serve)."""
        self._attach(node.ns, ifname, mac, 1500, bridge)
        if ipv4:
            _ip("-n", node.ns, "addr", "add", ipv4, "dev", ifname)

    def route_clients(self, node: Node, network: str, server: Node) -> None:
        """Let ``node`` send from any address of ``network``: many simulated phones, each with its own source address,
        one router hop from ``server``, which gets a route back through ``node``.

        A local route (Linux "AnyIP") rather than thousands of addresses on the interface, and a router hop rather
        than one link: the kernel's neighbour table is shared by every namespace (1,024 entries by default), so a
        thousand clients on the server's own link would overflow it.
        """
        _ip("-n", node.ns, "route", "add", "local", network, "dev", "lo")
        _ip("-n", server.ns, "route", "add", network, "via", node.address, "dev", server.ifname)

    def wait_link_local(self, node: Node, timeout: float = 10.0) -> str:
        """The node's IPv6 link-local address, once the kernel has assigned it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = _ip("-n", node.ns, "-6", "-o", "addr", "show", "dev", node.ifname, "scope", "link").stdout
            for word in out.split():
                if word.startswith("fe80:"):
                    if "tentative" not in out:
                        return word.split("/")[0]
            time.sleep(0.05)
        raise TimeoutError(f"no link-local address on {node.ns}/{node.ifname}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream:
                    with contextlib.suppress(Exception):
                        stream.close()
        # Any process still inside a lab namespace (a daemonised dhclient, say) dies with it.
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            _ip("netns", "delete", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    sweep_stale()
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()
