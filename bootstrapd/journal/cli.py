"""``bootstrapd status``: the phones of the journal, their stages and their journeys, read while the daemon runs.

The journal file is opened read-only: nothing here can hold a lock the daemon's writer waits for. With a shared
store (PostgreSQL) it reads every appliance's records from the database. Whether the daemon's lease store is
reachable comes from the state file the daemon keeps (``leases/health.py``): a line first when it is not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from collections import Counter
from typing import Any

from bootstrapd import config
from bootstrapd.configfile import ConfigError
from bootstrapd.journal.backends import open_reader
from bootstrapd.journal.stage import LABELS, STAGES
from bootstrapd.journal.steps import normal_mac
from bootstrapd.journal.store import JournalStore, JournalUnavailable, PhoneRow
from bootstrapd.journal.views import phone_document, phones_document
from bootstrapd.leases.health import describe, read_state


def _stage_id(text: str) -> str | None:
    low = text.strip().lower().replace("-", "_")
    for stage in STAGES:
        if low in (stage, LABELS[stage], LABELS[stage].replace(" ", "_")):
            return stage
    return None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def summary(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = [f"{counts[s]} {LABELS[s]}" for s in STAGES if counts.get(s)]
    return f"{total} phone{'s' if total != 1 else ''}" + (": " + ", ".join(parts) if parts else "")


def _cut(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[:width - 1] + "…"


def table(rows: list[PhoneRow], width: int) -> list[str]:
    head = f"{'MAC':17}  {'STAGE':23}  {'ADDRESS':15}  {'MODEL':12}  {'FIRMWARE':13}  "
    rest = max(20, width - len(head))
    lines = [head + "LAST STEP / ERROR"]
    for row in rows:
        doc = row.doc
        error = doc.get("error")
        tail = f"{error}" if error else doc.get("last_step") or "-"
        lines.append(f"{row.mac:17}  {LABELS.get(row.stage, row.stage):23}  "
                     f"{_cut(doc.get('address') or doc.get('address6'), 15):15}  {_cut(doc.get('model'), 12):12}  "
                     f"{_cut(doc.get('firmware'), 13):13}  {_cut(tail, rest)}")
    return lines


def journey(p: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    lines = [f"{p['mac']}  {p['stage_label']}" + (f": {p['error']}" if p["error"] else ""),
             f"  address {p['address'] or '-'}  {p['address6'] or ''}".rstrip(),
             f"  phone   {' '.join(x for x in (p['vendor'], p['model'], p['firmware']) if x) or '-'}",
             f"  vendor class {p['vendor_class'] or '-'}"]
    if p.get("appliances"):  # a shared store: the steps of every appliance, each marked with its own
        lines.append(f"  seen by {', '.join(p['appliances'])}")
    lines.append("")
    width = max((len(s.get("appliance") or "") for s in steps), default=0)
    for step in steps:
        mark = " " if step.get("ok", True) else "!"
        who = f"{step.get('appliance') or '':{width}}  " if width else ""
        lines.append(f"{_iso(step['time'])}.{int(step['time'] * 1000) % 1000:03d} {mark} {who}{step['proto']:6} "
                     f"{step['text']}")
        if step.get("error"):
            lines.append(f"{'':{26 + len(who)}}{step['error']}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"bootstrapd: {exc}", file=sys.stderr)
        return 2
    stage = None
    if args.stage:
        stage = _stage_id(args.stage)
        if stage is None:
            print(f"bootstrapd: --stage {args.stage!r}: one of {', '.join(STAGES)}", file=sys.stderr)
            return 2
    mac = None
    if args.mac:
        mac = normal_mac(args.mac)
        if mac is None:
            print(f"bootstrapd: --mac {args.mac!r} is not a MAC address", file=sys.stderr)
            return 2
    if args.watch and args.json:
        print("bootstrapd: --watch and --json do not go together (poll with --json instead)", file=sys.stderr)
        return 2
    if not args.watch:
        return _show(settings, args, stage, mac)
    # Ctrl-C or a plain kill ends the watch cleanly (exit 0), also when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: the table redrawn in place
            _show(settings, args, stage, mac)
            sys.stdout.write(f"\n(every {args.interval:g}s; Ctrl-C ends)\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _show(settings: config.Settings, args: argparse.Namespace, stage: str | None, mac: str | None) -> int:
    state = read_state(settings.server.state_dir)  # the lease store as the daemon sees it
    down = state is not None and not state.get("up", True)
    try:
        store = open_reader(settings)
        try:
            return _print(settings, args, stage, mac, store, state if down else None)
        finally:
            if store is not None:
                store.close()
    except JournalUnavailable as exc:  # the shared database is down (or refuses us): say so, and since when
        if args.json:
            print(json.dumps({"error": f"the journal cannot be read: {exc}", "store": state}))
        else:
            print(f"bootstrapd: the journal cannot be read: {exc}", file=sys.stderr)
            if state is not None:
                print(describe(state), file=sys.stderr)
        return 1


def _print(settings: config.Settings, args: argparse.Namespace, stage: str | None, mac: str | None,
           store: JournalStore | None, down: dict[str, Any] | None) -> int:
    """``down``: the daemon's store state when it is down (printed first; in --json as "store")."""
    if store is None:
        if args.json:
            print(json.dumps(phones_document(None, health=down) if mac is None else
                             {"error": "no such phone", "mac": mac}))
        else:
            if down is not None:
                print(describe(down))
            print(f"no journal yet in {settings.server.state_dir} (the daemon writes it once phones show up)",
                  file=sys.stderr)
        return 1 if mac else 0
    if mac is not None:
        document = phone_document(store, mac)
        if document is None:
            if args.json:
                print(json.dumps({"error": "no such phone", "mac": mac}))
            else:
                print(f"bootstrapd: {mac}: not in the journal", file=sys.stderr)
            return 1
        if args.json:
            json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
            print()
        else:
            if down is not None:
                print(describe(down))
            print("\n".join(journey(document["phone"], document["steps"])))
        return 0
    if args.json:
        json.dump(phones_document(store, stage, down), sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    rows = store.phones()
    counts = Counter(r.stage for r in rows)
    if stage is not None:
        rows = [r for r in rows if r.stage == stage]
    if down is not None:
        print(describe(down))
        print()
    if rows:
        # Cut to the terminal's width on a terminal only: piped into grep or a file, every line is whole.
        width = shutil.get_terminal_size((160, 24)).columns if sys.stdout.isatty() else 10_000
        print("\n".join(table(rows, width)))
        print()
    print(summary(counts))
    return 0


def setup_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch")
    parser.add_argument("--stage", help=f"only phones at this stage ({', '.join(STAGES)})")
    parser.add_argument("--mac", help="one phone's whole journey")
    parser.set_defaults(func=cmd_status)


# -- trace ------------------------------------------------------------------------------------------------------
def cmd_trace(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bootstrapd.journal.diagnose import diagnose, stopped_at
    from bootstrapd.journal.tracing import read_capture

    mac = None
    if args.mac:
        mac = normal_mac(args.mac)
        if mac is None:
            print(f"bootstrapd: --mac {args.mac!r} is not a MAC address", file=sys.stderr)
            return 2
    path = Path(args.capture)

    def progress(count: int) -> None:
        sys.stderr.write(f"\r{path}: {count} packets read…")
        sys.stderr.flush()

    try:
        events = read_capture(path, progress if sys.stderr.isatty() else None)
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
    except (OSError, ValueError, EOFError) as exc:
        print(f"bootstrapd: {path}: {exc}", file=sys.stderr)
        return 2
    start = events[0].time if events else 0.0
    phones: dict[str, list[Any]] = {}
    for event in events:
        if event.mac is not None and (mac is None or event.mac == mac):
            phones.setdefault(event.mac, []).append(event)
    report: list[dict[str, Any]] = []
    for who, timeline in phones.items():
        found = diagnose(timeline, args.server)
        addresses = sorted({str(e.facts["address"]) for e in timeline if e.facts.get("address")})
        report.append({"mac": who, "addresses": addresses, "stopped_at": stopped_at(timeline),
                       "timeline": [{"number": e.number, "time": round(e.time - start, 6), "source": e.src,
                                     "destination": e.dst, "protocol": e.proto, "info": e.info} for e in timeline],
                       "diagnosis": [d.as_dict() | {"time": round(d.time - start, 6) if d.time else None}
                                     for d in found]})
    if args.json:
        json.dump({"capture": str(path), "packets": len(events), "phones": report}, sys.stdout, indent=2,
                  ensure_ascii=False)
        print()
        return 0
    if not report:
        print(f"{path}: no provisioning traffic" + (f" of {mac}" if mac else "") + f" in {len(events)} packets")
        return 0
    for phone in report:
        print(f"{phone['mac']}  {' '.join(phone['addresses'])}".rstrip())
        print(f"  {'No.':>6}  {'Time':>11}  {'Source':<26} {'Destination':<26} {'Protocol':<8} Info")
        for row in phone["timeline"]:
            print(f"  {row['number']:>6}  {row['time']:>11.6f}  {row['source']:<26} {row['destination']:<26} "
                  f"{row['protocol']:<8} {row['info']}")
        print(f"  stopped at: {phone['stopped_at']}")
        marks = {"error": "!", "warning": "?", "info": "i"}
        for d in phone["diagnosis"] or [{"severity": "info", "kind": "ok", "text": "nothing wrong found"}]:
            print(f"  {marks.get(d['severity'], '-')} {d['kind']}: {d['text']}")
        print()
    return 0


def setup_trace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", metavar="CAPTURE", help="a pcap or pcapng file (tcpdump, Wireshark, run --pcap)")
    parser.add_argument("--mac", help="only this phone")
    parser.add_argument("--server", help="our DHCP server's address: any other answering is reported as not ours")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_trace)
