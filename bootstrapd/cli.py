"""The ``bootstrapd`` command line.

Exit codes: 0 success, 1 the command failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable

from bootstrapd import __version__, config, eventloop
from bootstrapd.configfile import ConfigError

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def _error(message: str) -> None:
    print(f"bootstrapd: {message}", file=sys.stderr)


def _load(args: argparse.Namespace) -> config.Settings | None:
    try:
        return config.load(args.config)
    except ConfigError as exc:
        _error(str(exc))
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from bootstrapd import log
    from bootstrapd.daemon import Daemon, StartupError

    log.setup(args.log_format, logging.DEBUG if args.debug else logging.INFO)
    settings = _load(args)
    if settings is None:
        return 2
    daemon = Daemon(settings, _run_overrides(args))
    try:
        factory = eventloop.loop_factory(args.event_loop)
    except ImportError:
        _error("--event-loop uvloop: uvloop is not installed (pip install uvloop)")
        return 2
    try:
        eventloop.run(daemon.run(), factory)
    except StartupError as exc:
        logging.getLogger("bootstrapd").error("cannot start: %s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _run_overrides(args: argparse.Namespace) -> Callable[[config.Settings], config.Settings] | None:
    if not args.pcap:
        return None
    import dataclasses

    def adjust(settings: config.Settings) -> config.Settings:
        return dataclasses.replace(settings, capture=dataclasses.replace(settings.capture, file=args.pcap))

    return adjust


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return 2
    for warning in settings.warnings:
        print(f"bootstrapd: warning: {warning}", file=sys.stderr)
    from bootstrapd.urlreport import print_check

    print_check(settings, as_json=args.json)
    return 0


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cmd_leases(args: argparse.Namespace) -> int:
    from bootstrapd.dhcpconf import format_mac
    from bootstrapd.leases import listing
    from bootstrapd.leases.backends import StoreOpenError

    settings = _load(args)
    if settings is None:
        return 2
    try:
        rows4, rows6 = listing.read(settings, args.all)
    except StoreOpenError as exc:
        _error(str(exc))
        return 1
    if args.json:
        json.dump(listing.as_json(rows4, rows6), sys.stdout, indent=2)
        print()
        return 0
    if rows4:
        print(f"{'MAC':17}  {'ADDRESS':15}  {'EXPIRES':20}  {'STATE':8}  {'VENDOR CLASS':20}  HOSTNAME")
        for r in rows4:
            print(f"{format_mac(r.mac):17}  {r.address!s:15}  {_iso(r.expires):20}  {r.state:8}  "
                  f"{(r.vendor_class or '-')[:20]:20}  {r.hostname or '-'}")
    if rows6:
        if rows4:
            print()
        print(f"{'DUID':30}  {'IAID':>10}  {'ADDRESS':28}  {'EXPIRES':20}  STATE")
        for r6 in rows6:
            print(f"{r6.duid.hex()[:30]:30}  {r6.iaid:>10}  {r6.address!s:28}  {_iso(r6.expires):20}  {r6.state}")
    if not rows4 and not rows6:
        print("no leases", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bootstrapd", description="Provision SIP desk phones on a bare LAN.")
    parser.add_argument("--version", action="version", version=f"bootstrapd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the appliance in the foreground")
    run.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--debug", action="store_true", help="log every event (costly under load)")
    run.add_argument("--pcap", metavar="FILE", help="record the services' frames to FILE (sets capture.file)")
    run.add_argument("--event-loop", choices=eventloop.CHOICES, default="auto",
                     help="the event loop: uvloop when installed (auto, the default), uvloop, or the standard one")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config", "-c", required=True)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=cmd_check_config)

    leases = sub.add_parser("leases", help="list the leases")
    leases.add_argument("--config", "-c", required=True)
    leases.add_argument("--json", action="store_true", help="machine-readable output")
    leases.add_argument("--all", action="store_true", help="include expired, released and declined entries")
    leases.set_defaults(func=cmd_leases)

    for name, (help_text, setup) in _EXTRA.items():
        p = sub.add_parser(name, help=help_text)
        setup(p)
    return parser


# Commands contributed by services (resync, …): name -> (help, function that adds arguments and sets func).
_EXTRA: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def _register_extras() -> None:
    from bootstrapd.provisioning.authcli import setup_hash_password
    from bootstrapd.provisioning.cli import register as register_provisioning

    register_provisioning(_EXTRA)
    _EXTRA["hash-password"] = ("print the scrypt hash of a password (read from the terminal or one line of stdin) "
                               "for an [[auth]] entry", setup_hash_password)
    from bootstrapd.sim.cli import register as register_sim

    register_sim(_EXTRA)
    _register_journal()
    from bootstrapd.leases.dbcli import register as register_db

    register_db(_EXTRA)
    try:
        from bootstrapd.pnp.cli import setup_resync
    except ImportError:
        return
    _EXTRA["resync"] = ("make phones fetch their configuration again (SIP check-sync)", setup_resync)


def _register_journal() -> None:
    from bootstrapd.journal.cli import setup_status, setup_trace

    _EXTRA["status"] = ("the phones of the journal: stage, address, model, last step, error", setup_status)
    _EXTRA["trace"] = ("per-phone timelines and a diagnosis from a pcap/pcapng capture", setup_trace)


def main(argv: list[str] | None = None) -> int:
    _register_extras()
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
