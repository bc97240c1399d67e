"""``bootstrapd sim``: many simulated Yealink phones in one process, on one interface.

Exit codes: 0 every phone provisioned, 1 at least one failed, 2 bad usage (or the interface cannot be used).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
from pathlib import Path
from typing import Any

from bootstrapd.sim.identity import IdentityError, phones
from bootstrapd.sim.phone import Options, SimPhone
from bootstrapd.sim.transport import Limits


def _fail(message: str, code: int = 2) -> int:
    print(f"bootstrapd sim: {message}", file=sys.stderr)
    return code


def _preset(items: list[str]) -> dict[str, str]:
    preset: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        preset[key.strip()] = value.strip()
    return preset


def cmd_sim(args: argparse.Namespace) -> int:
    from bootstrapd.sim.report import document, format_text, summary
    from bootstrapd.sim.runner import Plan, Runner
    from bootstrapd.sim.view import View, print_table

    if args.count < 1:
        return _fail("--count must be at least 1")
    if args.custom_option is not None and not 128 <= args.custom_option <= 254:
        return _fail("--custom-option must be 128-254")
    try:
        preset = _preset(args.set or [])
        identities = phones(args.count, models=args.models, inventory=Path(args.inventory) if args.inventory else None,
                            seed=args.seed, firmware=args.firmware, preset=preset)
        if args.slice:
            index, _, parts = args.slice.partition("/")
            if not (index.isdigit() and parts.isdigit() and int(index) < int(parts)):
                raise ValueError(f"--slice {args.slice!r}: expected I/K with 0 <= I < K")
            identities = identities[int(index)::int(parts)]
            if not identities:
                raise ValueError(f"--slice {args.slice}: no phone falls in this slice")
    except (IdentityError, ValueError) as exc:
        return _fail(str(exc))
    if args.slice and args.dhcp6:
        return _fail("--slice: DHCPv6 replies go to one socket per interface, so one process does DHCPv6")
    context = None
    if args.ca:
        try:
            context = ssl.create_default_context(cafile=args.ca)
        except (OSError, ssl.SSLError) as exc:
            return _fail(f"--ca {args.ca}: {exc}")
    options = Options(pnp=not args.no_pnp, dhcp6=args.dhcp6, pnp_wait=args.pnp_wait, dhcp_only=args.dhcp_only,
                      custom_option=args.custom_option, flash_url=args.flash_url,
                      broadcast_flag=args.broadcast_flag, tftp_timeout=args.tftp_timeout,
                      tftp_tries=args.tftp_tries, local_cfg=args.local_cfg, init_reboot=not args.no_init_reboot)
    plan = Plan(identities, options, spread=args.spread, timeout=args.timeout, boots=args.boots, seed=args.seed,
                limits=Limits(tftp_timeout=args.tftp_timeout, tftp_tries=args.tftp_tries, ssl_context=context),
                keep_addresses=args.keep_addresses, start_at=args.start_at, shared=bool(args.slice))
    to_stdout = args.json == "-"
    stream = sys.stderr if to_stdout else sys.stdout
    view = View(stream, len(identities), live=None if not args.plain else False)

    async def main() -> tuple[list[list[SimPhone]], list[float], int, list[float]]:
        runner: Runner | None = None

        def changed(phone: SimPhone) -> None:
            if runner is not None and view.phones is not runner.phones:
                view.follow(runner.phones, runner.boot)
            view.changed(phone)

        runner = Runner(args.interface, plan, changed)
        boots = await runner.run()
        return boots, runner.starts, runner.strays, runner.cpu

    try:
        with view:
            boots, starts, strays, cpu = asyncio.run(main())
    except OSError as exc:
        return _fail(f"interface {args.interface}: {exc.strerror or exc} (run as root, in the lab's namespace)")
    except Exception as exc:
        from bootstrapd.net.interfaces import InterfaceError

        if isinstance(exc, InterfaceError):
            return _fail(str(exc))
        raise
    records = [[p.record(start, args.show_secrets) for p in boot] for boot, start in zip(boots, starts, strict=True)]
    for number, (boot, boot_records) in enumerate(zip(boots, records, strict=True), start=1):
        if args.table:
            print_table(stream, boot, live=False if args.plain else None)
        stream.write(format_text(summary(boot_records), boot=number if len(boots) > 1 else None))
    if args.json:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        doc: dict[str, Any] = document(records, extra={
            "interface": args.interface, "spread": args.spread,
            "simulator_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "simulator_cpu_seconds_per_boot": [round(c, 3) for c in cpu], "reannounced": strays,
            "started": starts})  # each boot's power-on on the monotonic clock (merging several processes)
        text = json.dumps(doc, indent=1)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    failed = any(p.failure for boot in boots for p in boot)
    return 1 if failed else 0


def setup_sim(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interface", "-i", required=True, help="the interface the phones are on (a lab namespace's)")
    p.add_argument("--count", "-n", type=int, default=10, help="how many phones (default 10)")
    p.add_argument("--models", default="T46U",
                   help="models, equal shares (T46U,T54W) or weighted (T46U:3,T54W:1); default T46U")
    p.add_argument("--inventory", help="an inventory (CSV/TOML): its phones first, with their MACs and models")
    p.add_argument("--spread", type=float, default=0.0, help="seconds over which phones power on (0: all at once)")
    p.add_argument("--dhcp-only", action="store_true", help="stop each phone at its DHCP ACK")
    p.add_argument("--no-pnp", action="store_true", help="phones with PnP off (the URL comes from DHCP)")
    p.add_argument("--dhcp6", action="store_true", help="DHCPv6 too (option 59 joins the URL sources)")
    p.add_argument("--pnp-wait", type=float, default=5.0, help="seconds a phone waits for the PnP NOTIFY (5)")
    p.add_argument("--custom-option", type=int, help="the phones' IPv4 Custom Option (128-254)")
    p.add_argument("--flash-url", help="the Server URL in the phones' flash (the last source)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a parameter every phone already has")
    p.add_argument("--firmware", type=int, help="firmware major version (e.g. 83; default: new enough for all)")
    p.add_argument("--local-cfg", metavar="LINES",
                   help="personal settings (key = value lines) each phone backs up as <mac>-local.cfg when "
                        "static.auto_provision.custom.sync = 1")
    p.add_argument("--broadcast-flag", action="store_true", help="set the DHCP broadcast flag")
    p.add_argument("--boots", type=int, default=1, choices=(1, 2),
                   help="2: boot again after provisioning (INIT-REBOOT for the address, the MD5 check)")
    p.add_argument("--no-init-reboot", action="store_true",
                   help="on the second boot, DISCOVER again instead of asking for the last address")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a phone still running fails (120)")
    p.add_argument("--tftp-timeout", type=float, default=5.0, help="seconds before a TFTP packet is sent again (5)")
    p.add_argument("--tftp-tries", type=int, default=5, help="sends of one TFTP packet before giving up (5)")
    p.add_argument("--ca", help="verify HTTPS certificates against this CA file (default: no verification)")
    p.add_argument("--seed", type=int, default=1, help="MACs, transaction ids and timers follow from it")
    p.add_argument("--json", metavar="FILE", help="one record per phone (timeline, effective configuration) to "
                                                   "FILE, or '-' for standard output")
    p.add_argument("--show-secrets", action="store_true", help="passwords and keys in --json instead of ********")
    p.add_argument("--table", action="store_true", help="a table of every phone after the run")
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    p.add_argument("--keep-addresses", action="store_true", help="leave the leased addresses on the interface")
    p.add_argument("--slice", metavar="I/K",
                   help="simulate only phones I, I+K, I+2K ... of the list (one of K simulator processes on the "
                        "interface; sets its promote_secondaries, so one process removing its addresses leaves the "
                        "others')")
    p.add_argument("--start-at", type=float, metavar="SECONDS",
                   help="power on at this CLOCK_MONOTONIC time (K processes started together power on at once)")
    p.set_defaults(func=cmd_sim)


def register(extra: dict[str, tuple[str, Any]]) -> None:
    extra["sim"] = ("simulated Yealink phones: DHCP, PnP and the full download, many at once", setup_sim)
