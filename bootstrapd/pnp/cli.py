"""``bootstrapd resync``: send check-sync NOTIFYs to phones and report each one's answer.

Targets are IPv4 addresses or MACs; a MAC is looked up among the active DHCPv4 leases, then among the phone records
in the store (phones that acknowledged the PnP responder's NOTIFY, :mod:`bootstrapd.pnp.phones`). NOTIFYs leave
from the provisioning interface (SO_BINDTODEVICE, its own address), all targets at once from one socket, each its
own UDP transaction (see :mod:`bootstrapd.pnp.checksync`).

Exit status: 0 every phone answered 2xx; 1 any timeout, rejection or unknown MAC; 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from bootstrapd.pnp.checksync import CheckSync
from bootstrapd.pnp.message import SipError, parse

if TYPE_CHECKING:
    from bootstrapd.config import Settings


def setup_resync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument("targets", metavar="TARGET", nargs="*", help="a phone's IPv4 address or MAC")
    parser.add_argument("--reboot", action="store_true", help="ask the phones to reboot (check-sync;reboot=true)")
    parser.add_argument("--all", action="store_true", help="every phone with an active lease or a PnP record")
    parser.add_argument("--port", type=int, default=5060, help="the phones' SIP port (default 5060)")
    parser.add_argument("--timeout", type=float, default=32.0,
                        help="seconds to wait for each phone's answer (default 32, RFC 3261 Timer F)")
    parser.add_argument("--user", default=None,
                        help="Request-URI user part (default: the phone's MAC when known, else 'phone')")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_resync)


def _normalise_mac(text: str) -> str | None:
    digits = "".join(ch for ch in text if ch not in ":-.").lower()
    if len(digits) == 12 and all(ch in "0123456789abcdef" for ch in digits):
        return digits
    return None


def _known_phones(settings: Settings, macs: set[str] | None) -> dict[str, str]:
    """MAC (12 hex digits) -> IPv4 address, from active leases and then the phone records; ``macs``: only these
    (None: every phone, for ``--all``). Read from the configured store (SQLite or PostgreSQL)."""
    from bootstrapd.leases.backends import read_store

    phones: dict[str, str] = {}
    try:
        rows = read_store(settings, phones=True)
    except Exception as exc:  # a store another version created, an unreachable database: report, do not crash
        print(f"bootstrapd: cannot read the lease store: {exc}", file=sys.stderr)
        return phones
    records = rows.phones if macs is None else [r for r in rows.phones if r.mac in macs]
    for record in records:
        if _ipv4(record.address):  # check-sync goes out over IPv4
            phones[record.mac] = record.address
    now = time.time()  # lease expiry times are wall-clock
    for lease in rows.leases4:
        if lease.state == "active" and lease.expires > now and (macs is None or lease.mac.hex() in macs):
            phones[lease.mac.hex()] = str(lease.address)  # a current lease beats an older PnP record
    return phones


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _usage(message: str) -> int:
    print(f"bootstrapd resync: {message}", file=sys.stderr)
    return 2


def cmd_resync(args: argparse.Namespace) -> int:
    from bootstrapd import config
    from bootstrapd.configfile import ConfigError

    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"bootstrapd: {exc}", file=sys.stderr)
        return 2
    if not args.targets and not args.all:
        return _usage("name at least one TARGET (IPv4 address or MAC), or --all")
    if not 0 < args.port < 65536 or args.timeout <= 0:
        return _usage("--port must be 1-65535 and --timeout positive")
    try:
        results = resync_phones(settings, args.targets, all_phones=args.all, port=args.port, timeout=args.timeout,
                                reboot=args.reboot, user=args.user)
    except ValueError as exc:
        return _usage(str(exc))
    except ResyncError as exc:
        print(f"bootstrapd: {exc}", file=sys.stderr)
        return 2
    if not results:
        print("no phones known", file=sys.stderr)
        return 1
    return _report(results, args.json)


class ResyncError(Exception):
    """The provisioning interface cannot send (missing, no IPv4 address)."""


def resync_phones(settings: Any, targets: list[str], *, all_phones: bool = False, port: int = 5060,
                  timeout: float = 32.0, reboot: bool = False, user: str | None = None) -> list[dict[str, Any]]:
    """Send check-sync to each target (IPv4 address or MAC) and wait for the answers: one row per phone.

    ``bootstrapd resync`` and the status API's ``POST /api/phones/<mac>/resync`` both run this. Raises ValueError for
    a target that is neither an address nor a MAC, ResyncError when the interface cannot send.
    """
    wanted: list[tuple[str, str | None, str | None]] = []  # (target as given, ip, mac)
    for target in targets:
        try:
            wanted.append((target, str(ipaddress.IPv4Address(target)), None))
            continue
        except ValueError:
            pass
        mac = _normalise_mac(target)
        if mac is None:
            raise ValueError(f"{target!r} is neither an IPv4 address nor a MAC")
        wanted.append((target, None, mac))
    macs = None if all_phones else {mac for _, _, mac in wanted if mac is not None}
    phones = _known_phones(settings, macs) if macs is None or macs else {}
    jobs = [(target, ip if mac is None else phones.get(mac), mac) for target, ip, mac in wanted]
    if all_phones:
        given = {mac for _, _, mac in jobs}
        jobs.extend((mac, ip, mac) for mac, ip in sorted(phones.items()) if mac not in given)
    if not jobs:
        return []
    from bootstrapd.net.interfaces import InterfaceError, lookup
    from bootstrapd.net.sockets import udp_socket

    try:
        iface = lookup(settings.server.interface)
    except InterfaceError as exc:
        raise ResyncError(f"{exc} (server.interface)") from None
    if iface.first_ipv4 is None:
        raise ResyncError(f"interface {iface.name!r} has no IPv4 address")
    sock = udp_socket(socket.AF_INET, iface.name, str(iface.first_ipv4), 0)
    try:
        results = _run(sock, jobs, argparse.Namespace(port=port, timeout=timeout, reboot=reboot, user=user))
    finally:
        sock.close()
    for row in results:
        row["ok"] = row["status"] is not None and 200 <= row["status"] < 300
    return results


def _run(sock: socket.socket, jobs: list[tuple[str, str | None, str | None]],
         args: argparse.Namespace) -> list[dict[str, Any]]:
    local = sock.getsockname()
    results: list[dict[str, Any]] = []
    live: list[tuple[CheckSync, dict[str, Any]]] = []
    now = time.monotonic()
    for target, ip, mac in jobs:
        row: dict[str, Any] = {"target": target, "ip": ip, "mac": mac, "status": None, "reason": ""}
        results.append(row)
        if ip is None:
            row["reason"] = "unknown MAC (no active lease, no PnP record)"
            continue
        user = args.user or mac or "phone"
        transaction = CheckSync(user=user, target=ip, port=args.port, local=(local[0], local[1]),
                                reboot=args.reboot, timeout=args.timeout)
        _sendto(sock, transaction.start(now), (ip, args.port))
        live.append((transaction, row))
    while any(not t.done for t, _ in live):
        now = time.monotonic()
        deadlines = [d for t, _ in live if (d := t.deadline()) is not None]
        wait = max(0.0, min(deadlines) - now) if deadlines else 0.0
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            try:
                data, _addr = sock.recvfrom(65535)
            except OSError:
                data = b""  # an ICMP error for an earlier send: the timers will tell
            try:
                message = parse(data) if data else None
            except SipError:
                message = None
            if message is not None and not message.is_request:
                for transaction, _row in live:
                    try:
                        if not transaction.done and transaction.matches(message):
                            transaction.receive(message)
                            break
                    except SipError:
                        break
        now = time.monotonic()
        for transaction, _row in live:
            again = transaction.on_timer(now)
            if again is not None:
                _sendto(sock, again, (transaction.target, transaction.port))
    for transaction, row in live:
        assert transaction.outcome is not None
        row["status"] = transaction.outcome.status
        row["reason"] = transaction.outcome.reason
        row["sent"] = transaction.sent
    return results


def _sendto(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:
        pass  # unreachable now; Timer E retries and Timer F reports it


def _report(results: list[dict[str, Any]], as_json: bool) -> int:
    ok = sum(1 for r in results if r["status"] is not None and 200 <= r["status"] < 300)
    for row in results:
        row["ok"] = row["status"] is not None and 200 <= row["status"] < 300
    if as_json:
        json.dump({"phones": results, "ok": ok, "failed": len(results) - ok}, sys.stdout, indent=2)
        print()
    else:
        for row in results:
            who = row["target"] if row["ip"] in (None, row["target"]) else f"{row['target']} ({row['ip']})"
            answer = f"{row['status']} {row['reason']}".strip() if row["status"] is not None else row["reason"]
            print(f"{who}: {answer}")
        if len(results) > 1:
            print(f"{ok} of {len(results)} phones answered 2xx, {len(results) - ok} failed")
    return 0 if ok == len(results) else 1
