"""Many simulated phones in one asyncio loop on one interface: the adapter around :class:`SimPhone`.

- DHCP: one packet socket for every phone, in promiscuous mode (the server unicasts OFFER/ACK to each phone's own
  MAC) with a BPF filter that keeps only UDP to port 68; frames are sent with the phone's MAC as source and
  dispatched back by transaction id.
- After the ACK: the leased address goes on the interface (:mod:`bootstrapd.sim.addresses`), a gratuitous ARP
  announces it, the phone's SIP socket binds to ``address:5060`` (multicast out of this interface), and each
  transfer binds to the address too: the server sees one client per phone.
- One timer per phone, re-armed only when its deadline changes. A phone still running after ``timeout`` seconds
  fails with the stage it was stuck in.

Needs CAP_NET_RAW and CAP_NET_ADMIN in the namespace it runs in; everything it added is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import random
import resource
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Interface
from typing import Any, cast

from bootstrapd.net.interfaces import Interface
from bootstrapd.sim import frames
from bootstrapd.sim.addresses import Addresses
from bootstrapd.sim.identity import Identity
from bootstrapd.sim.phone import Action, Configure, Get, Options, Put, SendDhcp, SendDhcp6, SendSip, SimPhone, Stage
from bootstrapd.sim.result import Result
from bootstrapd.sim.transport import Limits, PhoneLink, Transports

SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC = 263, 1, 1
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33


@dataclass
class Plan:
    identities: list[Identity]
    options: Options
    spread: float = 0.0  # seconds over which the phones power on (0: all at once)
    timeout: float = 120.0  # per boot
    boots: int = 1  # a second boot re-provisions with the MD5 check
    seed: int = 1
    limits: Limits = field(default_factory=Limits)
    keep_addresses: bool = False
    start_at: float | None = None  # the first boot's power-on, on the monotonic clock (several processes at once)
    shared: bool = False  # other simulator processes use the interface too (--slice)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, runner: Runner, phone: SimPhone) -> None:
        self.runner = runner
        self.phone = phone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.runner.apply(self.phone, self.phone.on_sip(data, (addr[0], addr[1]), self.runner.now()))

    def error_received(self, exc: Exception) -> None:
        pass


class Runner:
    def __init__(self, interface: str, plan: Plan, on_change: Callable[[SimPhone], None] | None = None) -> None:
        self.interface = interface
        self.plan = plan
        self.on_change = on_change or (lambda phone: None)
        self.loop = asyncio.get_running_loop()
        self.transports = Transports(plan.limits)
        self.phones: list[SimPhone] = []
        self.boot = 0
        self.start = 0.0
        self.starts: list[float] = []  # when each boot's first phone powered on (loop time)
        self.cpu: list[float] = []  # the simulator's own CPU seconds during each boot (is it the bottleneck?)
        self.dropped = 0  # frames the packet socket could not send (the phone's DHCP retransmits)
        self.strays = 0  # addresses announced again because a server sent to a phone's own MAC
        self._announced: dict[bytes, float] = {}  # every phone's address -> when it was last announced
        self._by_xid: dict[int, SimPhone] = {}
        self._by_xid6: dict[int, SimPhone] = {}
        self._dhcp6: socket.socket | None = None
        self._timers: dict[int, tuple[float, asyncio.TimerHandle]] = {}
        self._sip: dict[int, asyncio.DatagramTransport] = {}
        self._links: dict[int, PhoneLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._left = 0
        self._finished: set[int] = set()
        self._all_done = asyncio.Event()

    def now(self) -> float:
        return self.loop.time()

    # -- set-up ---------------------------------------------------------------------------------------------------

    def _open(self, iface: Interface) -> None:
        self.ifindex, self.ifmac = iface.index, iface.mac
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(frames.ETH_P_ALL))
        try:
            # struct sock_fprog {unsigned short len; struct sock_filter *filter}: the kernel copies the program.
            program = ctypes.create_string_buffer(frames.DHCP_CLIENT_FILTER, len(frames.DHCP_CLIENT_FILTER))
            fprog = struct.pack("HP", frames.DHCP_CLIENT_FILTER_LENGTH, ctypes.addressof(program))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            sock.bind((self.interface, frames.ETH_P_ALL))
            mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                    break
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.packet = sock
        if self.plan.shared:
            self._promote_secondaries()
        self.addresses = Addresses(self.ifindex)
        self.loop.add_reader(sock.fileno(), self._read_frames)
        if self.plan.options.dhcp6:
            self._open_dhcp6()

    def _promote_secondaries(self) -> None:
        """Removing an interface's primary IPv4 address removes every secondary one in its subnet too, unless
        promote_secondaries is set: with several processes, the first to finish would take the others' phones'
        addresses away. Set on the lab interface and left set (another process may still need it)."""
        path = f"/proc/sys/net/ipv4/conf/{self.interface}/promote_secondaries"
        with contextlib.suppress(OSError), open(path, "w") as knob:
            knob.write("1\n")

    def _open_dhcp6(self) -> None:
        """One socket for every phone's DHCPv6: [::]:546 on this interface, replies dispatched by transaction id."""
        from bootstrapd.net.sockets import udp_socket

        sock = udp_socket(socket.AF_INET6, self.interface, "::", 546, reuse_address=True)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        self._dhcp6 = sock
        self.loop.add_reader(sock.fileno(), self._read_dhcp6)

    def _close(self) -> None:
        self.loop.remove_reader(self.packet.fileno())
        self.packet.close()
        if self._dhcp6 is not None:
            self.loop.remove_reader(self._dhcp6.fileno())
            self._dhcp6.close()
        if not self.plan.keep_addresses:
            self.addresses.remove_all()
        self.addresses.close()

    # -- the run --------------------------------------------------------------------------------------------------

    async def run(self) -> list[list[SimPhone]]:
        """Every boot's phones, in the order of the plan's identities."""
        from bootstrapd.net.interfaces import lookup

        # pyroute2's synchronous API runs an event loop of its own: not inside this one.
        self._open(await asyncio.to_thread(lookup, self.interface))
        boots: list[list[SimPhone]] = []
        try:
            previous: list[SimPhone] | None = None
            for boot in range(self.plan.boots):
                self.boot = boot
                phones = await self._boot(previous)
                boots.append(phones)
                previous = phones
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self.transports.close()
            self._close()
        return boots

    async def _boot(self, previous: list[SimPhone] | None) -> list[SimPhone]:
        rng = random.Random(self.plan.seed * 1000 + self.boot)
        self.phones = []
        for index, identity in enumerate(self.plan.identities):
            before = previous[index] if previous else None
            phone = SimPhone(identity, self.plan.options, random.Random(rng.getrandbits(64)))
            if before is not None and before.outcome is not None:
                phone.last_md5 = before.outcome.cfg_md5()
            if before is not None and before.lease is not None:
                phone.previous_address = str(before.lease.address)
            self.phones.append(phone)
        self._by_xid.clear()
        self._by_xid6.clear()
        self._finished = set()
        self._left = len(self.phones)
        self._all_done = asyncio.Event()
        self.start = self.now()
        if self.boot == 0 and self.plan.start_at is not None:
            self.start = max(self.start, self.plan.start_at)  # the loop's clock is time.monotonic()
        self.starts.append(self.start)
        count = len(self.phones)
        for index, phone in enumerate(self.phones):
            offset = self.plan.spread * index / max(1, count - 1) if self.plan.spread else 0.0
            self.loop.call_at(self.start + offset, self._power_on, phone)
        await asyncio.sleep(max(0.0, self.start - self.now()))
        cpu = _cpu_seconds()
        try:
            await asyncio.wait_for(self._all_done.wait(), self.plan.timeout + self.plan.spread)
        except TimeoutError:
            for phone in self.phones:
                if not phone.done:
                    stage = phone.stage.value
                    phone.problems.append(f"still in stage {stage} after {self.plan.timeout:g} s")
                    phone._finish(self.now())
                    self._settle(phone)
        self.cpu.append(_cpu_seconds() - cpu)
        return self.phones

    def _power_on(self, phone: SimPhone) -> None:
        self.apply(phone, phone.power_on(self.now()))
        self.on_change(phone)

    # -- actions --------------------------------------------------------------------------------------------------

    def apply(self, phone: SimPhone, actions: list[Action]) -> None:
        stage = phone.stage
        for action in actions:
            if isinstance(action, SendDhcp):
                self._send_dhcp(phone, action.payload)
            elif isinstance(action, SendDhcp6):
                self._send_dhcp6(phone, action.payload)
            elif isinstance(action, SendSip):
                transport = self._sip.get(id(phone))
                if transport is not None:
                    with contextlib.suppress(OSError):
                        transport.sendto(action.data, action.dest)
            elif isinstance(action, Configure):
                self._spawn(self._configure(phone, action))
            elif isinstance(action, Get):
                self._spawn(self._transfer(phone, self.transports.get(self._link(phone), action.url)))
            elif isinstance(action, Put):
                self._spawn(self._transfer(phone, self.transports.put(self._link(phone), action.url,
                                                                      action.data)))
        self._settle(phone, stage)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _link(self, phone: SimPhone) -> PhoneLink:
        link = self._links.get(id(phone))
        if link is None:  # made once per phone and boot: the lease does not change after Configure
            assert phone.lease is not None
            mac = ":".join(phone.mac[i:i + 2] for i in range(0, 12, 2))
            ipv6 = phone.dhcp6.address if phone.dhcp6 is not None else None
            link = PhoneLink(str(phone.lease.address), f"Yealink SIP-{phone.identity.model.id} {phone.version} {mac}",
                             phone.identity.preset, str(ipv6) if ipv6 else None)
            self._links[id(phone)] = link
        return link

    def _send_dhcp(self, phone: SimPhone, payload: bytes) -> None:
        assert phone.dhcp is not None
        self._by_xid[phone.dhcp.xid] = phone
        try:
            self.packet.send(frames.dhcp_request_frame(bytes.fromhex(phone.mac), payload))
        except OSError:
            self.dropped += 1

    def _send_dhcp6(self, phone: SimPhone, payload: bytes) -> None:
        assert phone.dhcp6 is not None and self._dhcp6 is not None
        self._by_xid6[phone.dhcp6.xid] = phone
        try:
            self._dhcp6.sendto(payload, ("ff02::1:2", 547, 0, self.ifindex))
        except OSError:
            self.dropped += 1

    def _read_dhcp6(self) -> None:
        assert self._dhcp6 is not None
        now = self.now()
        for _ in range(256):
            try:
                payload, _addr = self._dhcp6.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            phone = self._by_xid6.get(int.from_bytes(payload[1:4], "big")) if len(payload) >= 4 else None
            if phone is not None:
                self.apply(phone, phone.on_dhcp6(payload, now))

    async def _configure(self, phone: SimPhone, action: Configure) -> None:
        lease = action.lease
        error: str | None = None
        try:
            if action.ipv6 is not None:
                self.addresses.add(IPv6Interface(f"{action.ipv6}/64"))
            self.addresses.add(lease.interface)
            with contextlib.suppress(OSError):
                self.packet.sendto(frames.garp_frame(self.ifmac, lease.address.packed),
                                   (self.interface, frames.ETH_P_ARP))
            self._announced[lease.address.packed] = self.now()
            if self.plan.options.pnp:
                await self._open_sip(phone, str(lease.address))
        except OSError as exc:
            error = exc.strerror or str(exc)
        self.apply(phone, phone.configured(self.now(), error))

    async def _open_sip(self, phone: SimPhone, address: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            mreqn = socket.inet_aton("0.0.0.0") + socket.inet_aton(address) + struct.pack("@i", self.ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            sock.setblocking(False)
            sock.bind((address, 5060))
        except BaseException:
            sock.close()
            raise
        transport, _ = await self.loop.create_datagram_endpoint(lambda: _Sip(self, phone), sock=sock)
        self._sip[id(phone)] = transport

    async def _transfer(self, phone: SimPhone, pending: Any) -> None:
        try:
            result: Result = await pending
        except Exception as exc:  # a bug in a client must fail this phone, not the run
            result = Result(None, "error", f"{type(exc).__name__}: {exc}"[:200])
        self.apply(phone, phone.fetched(result, self.now()))

    # -- timers, completion ---------------------------------------------------------------------------------------

    def _settle(self, phone: SimPhone, before: Stage | None = None) -> None:
        key = id(phone)
        deadline = phone.deadline
        armed = self._timers.get(key)
        if armed is not None and armed[0] != deadline:
            armed[1].cancel()
            del self._timers[key]
            armed = None
        if deadline is not None and armed is None:
            self._timers[key] = (deadline, self.loop.call_at(deadline, self._fire, phone))
        if before is not None and phone.stage is not before:
            self.on_change(phone)
        if phone.done and key not in self._finished:
            self._finished.add(key)
            self._release(phone)

    def _fire(self, phone: SimPhone) -> None:
        self._timers.pop(id(phone), None)
        self.apply(phone, phone.on_timer(self.now()))

    def _release(self, phone: SimPhone) -> None:
        self._links.pop(id(phone), None)
        transport = self._sip.pop(id(phone), None)
        if transport is not None:
            # The last 200 to a NOTIFY may still be answered for a retransmission: close a little later.
            self.loop.call_later(2.0, transport.close)
        if phone.lease is not None:
            self.transports.close_phone(str(phone.lease.address))
        self._left -= 1
        if self._left <= 0:
            self._all_done.set()

    # -- DHCP input -----------------------------------------------------------------------------------------------

    def _stray(self, frame: bytes, now: float) -> None:
        """A frame for a phone's own MAC: the server's neighbour entry for that phone's address still names the MAC
        it unicast its ACK to (dnsmasq installs one). Announce the address again, at most once a second."""
        target = frames.stray_target(frame)
        if target is None or target not in self._announced:
            return
        if now - self._announced[target] < 1.0:
            return
        self._announced[target] = now
        self.strays += 1
        with contextlib.suppress(OSError):
            self.packet.sendto(frames.garp_frame(self.ifmac, target), (self.interface, frames.ETH_P_ARP))

    def _read_frames(self) -> None:
        now = self.now()
        for _ in range(256):
            try:
                frame = self.packet.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            parsed = frames.udp_payload(frame)
            if parsed is None or parsed[2] != 68:
                self._stray(frame, now)
                continue
            if parsed[1] != 67 or len(parsed[0]) < 8:
                continue
            payload = parsed[0]
            phone = self._by_xid.get(int.from_bytes(payload[4:8], "big"))
            if phone is not None:
                self.apply(phone, phone.on_dhcp(payload, now))

