"""CPU per DORA exchange of the DHCPv4 core and of the phone journal, measured in one process (a developer tool).

    python -m tests.bench.inprocess [--count N] [--repeat R] [--only core|journal|storm|journal6|dhcp6|http]

No lab, no sockets, no other process: the figures are the Python work alone, so on a machine shared with other
sessions they move far less than a benchmark's (the best of ``--repeat`` runs is printed; CPU time, not wall time).
For instruction counts, which do not move with the machine's load at all, run it under valgrind twice with two
counts and take the difference per exchange (README, "Where the time goes"); for the DHCPv4 core give both runs
the same ``--built`` (``--count 1000 --built 3000`` and ``--count 3000 --built 3000``): without it the difference
also counts the encoding of the messages (292,600 instead of 167,600 instructions per DORA at 60e77ad).

- ``dhcp4 core``: :meth:`Dhcp4Server.handle` for a DISCOVER and its REQUEST from a new client each time (relayed, an
  option 55 like perfdhcp's; ``--client-id``: an option 61 too, like perfdhcp's), the pool and the configuration of
  ``make bench-dhcp4``;
- ``journal, loop side``: the two events of such an exchange through the journal's sink, then folded into steps and
  the phone's stage and encoded for the writer (``Journal._process``), in batches of 1,000 events (4,000 events a
  second at the 0.25 s flush interval);
- ``journal, writer``: those batches written to a journal SQLite file in a temporary folder (the writer thread's
  work, here on the calling thread);
- ``storm`` (only with ``--only storm``): the core and the journal together as the daemon runs them during a storm
  (the journal holding the events, the daemon's garbage-collector settings), then the catch-up: CPU per exchange
  in each, and the cyclic garbage collector's passes in each (how many, their wall time together and the longest:
  a pause of the loop, during which the requests queue and after which their replies leave in a burst).
  ``--tuples``: a second sink also holds every event as a ``(time, kind, fields)`` tuple, as the journal's sink did
  before it held them flat (journal.py, ``STRIDE``): that change's A/B;
- ``dhcp6`` (only with ``--only dhcp6``): :meth:`Dhcp6Server.handle` for a Solicit and its Request from a new client
  each time, as perfdhcp -6 sends them in ``make bench-dhcp6`` (a DUID-LLT, one IA_NA, elapsed time, an option
  request for DNS servers; the Request with the Server ID and the advertised address), that benchmark's pool, and
  with ``--events`` the adapter's ``dhcp6.reply`` event fields for both replies too (``reply_event``); ``--built``
  as for the DHCPv4 core (``--count 1000`` and ``--count 3000``, both ``--built 3000``: the difference is the core
  alone);
- ``journal6`` (only with ``--only journal6``): the journal folding the two ``dhcp6.reply`` events of each SARR
  exchange, their address as text (as the adapter emits it: dhcp6/adapter.py, ``reply_event``) and as an
  ``IPv6Address`` object (as it did before), alternating;
- ``http`` (only with ``--only http``): the journal's cost per ``http.request`` event of an HTTP boot storm (the
  three files of ``make bench-http`` in rotation, a Yealink User-Agent with its MAC): ``emit`` (``emit_request``,
  ``Events.emit`` and the sink holding it, as the storm runs it), ``fold`` (the catch-up: steps, the phone's stage,
  the documents and steps encoded), ``writer`` (those batches into a journal SQLite file), and the memory each held
  event takes (tracemalloc, during the storm); once with every request from one phone (as bench-http's wrk sends
  them) and once from 1,000 phones (a floor: three files each).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any

from bootstrapd.clock import Now
from bootstrapd.config import loads
from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.server import Dhcp4Server
from bootstrapd.dhcp6 import codec as codec6
from bootstrapd.dhcp6.adapter import reply_event
from bootstrapd.dhcp6.server import Dhcp6Server
from bootstrapd.events import Events
from bootstrapd.http.event import emit_request
from bootstrapd.http.files import Outcome
from bootstrapd.journal.journal import Journal
from bootstrapd.journal.settings import JournalSettings
from bootstrapd.journal.store import Batch, Limits, SqliteJournal
from bootstrapd.leases.owners import LeaseOwners
from tests.bench.dhcp4 import BOOTSTRAPD, FIRST, SERVER

RELAY = "10.78.0.2"
PARAMS = {codec.PARAM_LIST: bytes([1, 28, 2, 3, 15, 6, 12])}


def _message(kind: int, mac: bytes, xid: int, options: dict[int, bytes]) -> bytes:
    packet = codec.Packet(op=codec.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"),
                          giaddr=IPv4Address(RELAY).packed)
    packet.options = {codec.MESSAGE_TYPE: bytes((kind,)), **options}
    return codec.encode(packet)


def dhcp4_core(count: int, client_id: bool = False, built: int = 0) -> float:
    """CPU seconds per DORA of the core alone (``client_id``: each message carries an option 61, echoed in the
    replies, as perfdhcp's and most phones' do; ``built``: build that many exchanges' messages, at least
    ``count``, and handle the first ``count``: under valgrind, two runs with the same ``built`` differ by the
    core's instructions alone, without the encoding of the messages)."""
    settings = loads(BOOTSTRAPD.replace("@ROOT@", "/nonexistent").replace("@STATE@", "/nonexistent"))
    server = Dhcp4Server(settings.dhcp4, IPv4Address(SERVER), IPv4Network("10.78.0.0/16"))
    first = int(IPv4Address(FIRST))
    messages = []
    for i in range(max(count, built)):
        mac = (0x020000000000 + i).to_bytes(6, "big")
        options = {**PARAMS, codec.CLIENT_ID: b"\x01" + mac} if client_id else PARAMS
        messages.append((_message(codec.DISCOVER, mac, i, options),
                         _message(codec.REQUEST, mac, i, {**options, codec.SERVER_ID: IPv4Address(SERVER).packed,
                                                          codec.REQUESTED_IP: (first + i).to_bytes(4, "big")})))
    source = (RELAY, 67)
    started = time.process_time()
    for i, (discover, request) in enumerate(messages[:count]):
        now = Now(1000.0 + i * 1e-4, 10.0 + i * 1e-4)
        server.handle(discover, source, now)
        ack = server.handle(request, source, now)
        assert ack is not None and ack.commit, "every REQUEST must be ACKed"
    return (time.process_time() - started) / count


SERVER_DUID6 = b"\x00\x01\x00\x01\x2c\x00\x00\x01\x02\x00\x00\x00\x00\x01"
DHCP6_CONFIG = """
[server]
interface = "eth1"
root = "/nonexistent"
state_dir = "/nonexistent"
url = "tftp://{ipv4}/"

[dhcp4]
enabled = false

[dhcp6]
enabled = true
range = "fd77::1:0-fd77::10:ffff"
"""


def _dhcp6_pair(i: int) -> tuple[bytes, bytes]:
    """A Solicit and its Request as perfdhcp -6 sends them (the Request for the address the core will advertise:
    the pool's i-th, a new client every time)."""
    duid = b"\x00\x01\x00\x01\x2c\x00\x00\x02" + (0x020000000000 + i).to_bytes(6, "big")
    iaid = (1).to_bytes(4, "big")
    common = [(codec6.OPT_CLIENTID, duid), (codec6.OPT_ELAPSED_TIME, b"\x00\x00"),
              (codec6.OPT_ORO, codec6.encode_oro([codec6.OPT_DNS_SERVERS]))]
    solicit = codec6.Message(codec6.SOLICIT, i & 0xFFFFFF, [
        *common, (codec6.OPT_IA_NA, iaid + bytes(8))]).encode()
    ia = codec6.IaNa(1, 0, 0, [codec6.IaAddress(IPv6Address(int(IPv6Address("fd77::1:0")) + i), 3600, 7200)])
    request = codec6.Message(codec6.REQUEST, (i + 1) & 0xFFFFFF, [
        *common, (codec6.OPT_SERVERID, SERVER_DUID6), (codec6.OPT_IA_NA, ia.encode())]).encode()
    return solicit, request


def dhcp6_core(count: int, built: int = 0, events: bool = False) -> float:
    """CPU seconds per Solicit/Advertise/Request/Reply of the DHCPv6 core alone (``built``: as for the DHCPv4 core,
    build that many exchanges' messages and handle the first ``count``; ``events``: with the adapter's
    ``dhcp6.reply`` event fields for both replies)."""
    settings = loads(DHCP6_CONFIG)
    server = Dhcp6Server(settings.dhcp6, SERVER_DUID6,
                         variables={"ipv4": "10.77.0.1", "ipv6": "fd77::1", "interface": "eth1"})
    messages = [_dhcp6_pair(i) for i in range(max(count, built))]
    source = "fe80::2"
    started = time.process_time()
    for i, (solicit, request) in enumerate(messages[:count]):
        now = Now(1000.0 + i * 1e-4, 10.0 + i * 1e-4)
        advertise = server.handle(solicit, source, now)
        reply = server.handle(request, source, now)
        assert advertise is not None and reply is not None and reply.leases, "every Request must get its address"
        if events:
            reply_event(advertise)
            reply_event(reply)
    return (time.process_time() - started) / count


def _events(count: int) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for i in range(count):
        mac = (0x020000000000 + i).to_bytes(6, "big").hex(":")
        address = f"10.78.{1 + i // 256}.{i % 256}"
        for kind, request in (("OFFER", "DISCOVER"), ("ACK", "REQUEST")):
            events.append((f"dhcp4.{kind.lower()}", {"type": kind, "request": request, "mac": mac, "address": address,
                                                     "classes": (), "vendor_class": None, "options": (1, 3, 6, 66)}))
    return events


def journal(count: int) -> tuple[float, float]:
    """CPU seconds per DORA of the journal: the loop's side, the writer's."""
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        store = SqliteJournal(Path(tmp) / "journal.sqlite3")
        settings = JournalSettings()
        journal = Journal(settings, store, Events(), LeaseOwners())
        events = _events(count)
        started = time.process_time()
        for first in range(0, len(events), 1000):
            for kind, fields in events[first:first + 1000]:
                journal.sink(kind, fields)
            journal._backlog.extend(journal._take())
            journal._process(whole=True)
        loop = time.process_time() - started
        batches = _queued(journal)
        limits = Limits(settings.steps_per_phone, settings.max_steps, settings.max_phones)
        started = time.process_time()
        for batch in batches:
            store.write([batch], limits)
        writer = time.process_time() - started
        store.close()
    return loop / count, writer / count


def _queued(journal: Journal) -> list[Batch]:
    """The batches the journal handed to its writer (the writer thread's input, taken here instead)."""
    batches: list[Batch] = []
    while not journal._queue.empty():
        item = journal._queue.get_nowait()
        assert isinstance(item, Batch)
        batches.append(item)
    return batches


Pauses = list[tuple[int, float]]  # the collector's passes: (generation, wall seconds)


def storm(count: int, tuples: bool = False) -> tuple[float, float, Pauses, Pauses]:
    """CPU seconds per DORA during a storm and in its catch-up, and the garbage collector's passes in each."""
    settings = loads(BOOTSTRAPD.replace("@ROOT@", "/nonexistent").replace("@STATE@", "/nonexistent"))
    server = Dhcp4Server(settings.dhcp4, IPv4Address(SERVER), IPv4Network("10.78.0.0/16"))
    events = Events()
    limits = JournalSettings(max_pending=10 * count, max_phones=10 * count, max_steps=10 * count)
    journal = Journal(limits, None, events, LeaseOwners())  # type: ignore[arg-type]
    events.subscribe(journal.sink)
    held: list[tuple[float, str, dict[str, Any]]] = []
    if tuples:
        events.subscribe(lambda kind, fields: held.append((time.time(), kind, fields)))
    first = int(IPv4Address(FIRST))
    messages = [(_message(codec.DISCOVER, (0x020000000000 + i).to_bytes(6, "big"), i, PARAMS),
                 _message(codec.REQUEST, (0x020000000000 + i).to_bytes(6, "big"), i,
                          {**PARAMS, codec.SERVER_ID: IPv4Address(SERVER).packed,
                           codec.REQUESTED_IP: (first + i).to_bytes(4, "big")})) for i in range(count)]
    passes: Pauses = []
    began = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            passes.append((info["generation"], time.perf_counter() - began[0]))

    gc.collect()
    gc.freeze()  # as the daemon does once it is serving (daemon.py)
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    gc.callbacks.append(timed)
    try:
        source = (RELAY, 67)
        started = time.process_time()
        for i, (discover, request) in enumerate(messages):
            now = Now(1000.0 + i * 1e-4, 10.0 + i * 1e-4)
            for data in (discover, request):
                reply = server.handle(data, source, now)
                assert reply is not None and reply.event
                events.emit("dhcp4." + reply.event["type"].lower(), **reply.event)
            if i % 500 == 499:  # a tick every 1,000 events, all in the storm: collected, not folded
                journal._backlog.extend(journal._take())
        during = time.process_time() - started
        in_storm, passes[:] = passes[:], []
        held.clear()
        started = time.process_time()
        journal._backlog.extend(journal._take())
        journal._process(whole=True)
        after = time.process_time() - started
    finally:
        gc.callbacks.remove(timed)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    assert sum(p.steps for p in journal._phones.values()) == 2 * count
    return during / count, after / count, in_storm, passes


def _passes(passes: Pauses) -> str:
    longest = max((seconds for _, seconds in passes), default=0.0)
    return f"{len(passes)} passes, {1e3 * sum(s for _, s in passes):.1f} ms, longest {1e3 * longest:.1f} ms"


def journal6(count: int, as_text: bool) -> float:
    """CPU seconds per SARR exchange of the journal folding its two events (the catch-up after a storm)."""
    limits = JournalSettings(max_pending=10 * count, max_phones=10 * count, max_steps=10 * count)
    journal = Journal(limits, None, Events(), LeaseOwners())  # type: ignore[arg-type]
    first = int(IPv6Address("fd77::1:0"))
    for i in range(count):
        address = IPv6Address(first + i)
        mac = (0x001565000000 + i).to_bytes(6, "big")
        for kind, request in (("advertise", "SOLICIT"), ("reply", "REQUEST")):
            journal.sink("dhcp6.reply", {"duid": (b"\x00\x03\x00\x01" + mac).hex(), "mac": mac.hex(":"),
                                         "type": kind, "request": request,
                                         "address": str(address) if as_text else address, "options": (23, 59),
                                         "classes": ()})
    journal._backlog.extend(journal._take())
    started = time.process_time()
    journal._process(whole=True)
    return (time.process_time() - started) / count


HTTP_FILES = (("/y000000000000.boot", 400), ("/common.cfg", 4096), ("/features.cfg", 20480))


def http(count: int, phones: int) -> tuple[float, float, float, float]:
    """CPU seconds per http.request event of the journal (emitted and held, folded and encoded, written) and the
    bytes each held event takes; ``phones``: how many phones (User-Agents with their MAC) the requests come from."""
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        store = SqliteJournal(Path(tmp) / "journal.sqlite3")
        settings = JournalSettings(max_pending=10 * count)
        events = Events()
        journal = Journal(settings, store, events, LeaseOwners())
        events.subscribe(journal.sink)
        agents = [f"Yealink SIP-T46U 108.86.0.90 00:15:65:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
                  for i in range(phones)]
        clients = [f"10.77.{1 + i // 256}.{i % 256}" for i in range(phones)]

        def storm(n: int) -> None:
            for i in range(n):
                phone = i // 3 % phones
                path, size = HTTP_FILES[i % 3]
                emit_request(events, clients[phone], "GET", path, 200, Outcome(bytes=size), 0.000123, False,
                             agents[phone])

        # The memory first (tracemalloc slows every allocation down), what is held then let go; then the CPU.
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        storm(count)
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        journal._take()
        started = time.process_time()
        storm(count)
        emitted = time.process_time() - started
        started = time.process_time()
        journal._backlog.extend(journal._take())
        journal._scheduled = True  # SLICE events at a time, as the loop folds them after a storm, without a loop
        while journal._backlog:
            journal._process()
        folded = time.process_time() - started
        batches = _queued(journal)
        limits = Limits(settings.steps_per_phone, settings.max_steps, settings.max_phones)
        started = time.process_time()
        for first in range(0, len(batches), 8):  # the writer takes what queued meanwhile in one transaction
            store.write(batches[first:first + 8], limits)
        writer = time.process_time() - started
        store.close()
    assert sum(p.steps for p in journal._phones.values()) == count
    return emitted / count, folded / count, writer / count, held / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="DORA exchanges per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is printed")
    parser.add_argument("--only", choices=["core", "journal", "storm", "journal6", "dhcp6", "http"],
                        help="measure one of them")
    parser.add_argument("--client-id", action="store_true",
                        help="core: every message with a client identifier (option 61), as perfdhcp sends")
    parser.add_argument("--built", type=int, default=0,
                        help="core, dhcp6: build this many exchanges' messages and handle --count of them (callgrind: "
                             "two --counts with one --built differ by the core alone)")
    parser.add_argument("--events", action="store_true",
                        help="dhcp6: the adapter's dhcp6.reply event fields for both replies too (reply_event)")
    parser.add_argument("--tuples", action="store_true",
                        help="storm: also hold each event as a tuple, as the journal did before (the A/B)")
    args = parser.parse_args()
    if args.only == "http":
        print(f"The journal per http.request event, best of {args.repeat} runs of {args.count:,} requests:")
        for phones in (1, 1000):
            measured = [http(args.count, phones) for _ in range(args.repeat)]
            emitted, folded, written = (1e6 * min(r[i] for r in measured) for i in range(3))
            print(f"  {phones:5,} phone(s): emit + hold {emitted:5.1f} us, fold + encode {folded:5.1f} us, "
                  f"writer {written:5.1f} us, held {min(r[3] for r in measured):5.0f} bytes per event")
        return 0
    print(f"CPU per DORA exchange, best of {args.repeat} runs of {args.count:,}:")
    if args.only == "dhcp6":
        core6 = min(dhcp6_core(args.count, args.built, args.events) for _ in range(args.repeat))
        print(f"  dhcp6 core (Solicit + Request):       {1e6 * core6:6.1f} us per SARR exchange")
        return 0
    if args.only == "journal6":
        text, objects = [], []
        for _ in range(args.repeat):
            text.append(journal6(args.count, as_text=True))
            objects.append(journal6(args.count, as_text=False))
        print(f"  journal6, addresses as text:          {1e6 * min(text):6.1f} us per SARR exchange")
        print(f"  journal6, addresses as IPv6Address:   {1e6 * min(objects):6.1f} us per SARR exchange")
        return 0
    if args.only == "storm":
        runs = [storm(args.count, tuples=args.tuples) for _ in range(args.repeat)]
        print(f"  storm (core, events, journal collecting): {1e6 * min(r[0] for r in runs):6.1f} us")
        print(f"  its catch-up (the journal folding):       {1e6 * min(r[1] for r in runs):6.1f} us")
        for name, passes in (("storm", [r[2] for r in runs]), ("catch-up", [r[3] for r in runs])):
            shown = "; ".join(_passes(p) for p in passes)
            print(f"  the garbage collector in the {name + ':':9} {shown} (wall; each run)")
        return 0
    if args.only != "journal":
        core = min(dhcp4_core(args.count, args.client_id, args.built) for _ in range(args.repeat))
        print(f"  dhcp4 core (DISCOVER + REQUEST):      {1e6 * core:6.1f} us")
    if args.only != "core":
        sides = [journal(args.count) for _ in range(args.repeat)]
        print(f"  journal, loop side (2 events folded): {1e6 * min(s[0] for s in sides):6.1f} us")
        print(f"  journal, writer (SQLite):             {1e6 * min(s[1] for s in sides):6.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
