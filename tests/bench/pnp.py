"""Benchmark: complete SIP PnP exchanges per second (SUBSCRIBE -> 200 -> NOTIFY -> 200) against the real daemon.

Runs in its own namespace lab: the daemon in the appliance namespace, sipp as the phones in a phone namespace
(tests/lab/sipp/yealink-w52p.xml, a fresh Call-ID per call), offered at rising rates (``-r``) for a few seconds each.
A rate counts as held when every call completed (sipp saw the 200 and a NOTIFY that passed its checks, and sent its
200) with no failed call, at 90% or more of the offered rate over the run (start-up and the last call included).
The goal is 2,000 exchanges per second. Not part of the test suite; bounded in time.

    python -m tests.bench.pnp [--rates 500,1000,2000,3000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import lab

SCENARIO = Path(__file__).resolve().parent.parent / "lab" / "sipp" / "yealink-w52p.xml"


def _last_stats(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(rates: list[int], seconds: float, journal_ab: int = 0) -> int:
    if os.geteuid() != 0:
        print("the benchmark needs root (network namespaces)", file=sys.stderr)
        return 2
    if journal_ab:
        return run_journal_ab(rates, seconds, journal_ab)
    held = 0
    with tempfile.TemporaryDirectory() as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        node = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.20/24")
        config = BASE_CONFIG.format(root=work / "root", state=work / "state") + (
            '\n[pnp]\nenabled = true\nurl = "http://{ipv4}/$PN/"\n'
            # sipp plays every phone from one address: lift the per-source cap (real phones have one exchange each).
            'max_pending_per_source = 1000000\n')
        app = Appliance(node, work, config)
        app.start()
        assert app.proc is not None
        # `ip netns exec` execs the daemon: this pid is bootstrapd itself.
        pid = app.proc.pid
        print(f"{'offered/s':>9} {'calls':>6} {'ok':>6} {'failed':>6} {'retrans':>7} {'seconds':>7} {'done/s':>8} "
              f"{'daemon CPU':>10} {'us/exch':>8}")
        for rate in rates:
            calls = int(rate * seconds)
            stats = work / f"stats-{rate}.csv"
            errors = work / f"errors-{rate}.log"
            started = time.monotonic()
            cpu_before = _cpu_seconds(pid)
            result = phone.run(["sipp", "-sf", str(SCENARIO), "-r", str(rate), "-rp", "1000", "-m", str(calls),
                                "-l", str(max(1000, rate * 4)), "-i", phone.address, "-p", "5062", "-nostdin",
                                "-recv_timeout", "8000", "-timeout", f"{int(seconds * 4 + 20)}s",
                                "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_err", "-error_file",
                                str(errors), "224.0.1.75:5060"],
                               timeout=seconds * 4 + 40)
            elapsed = time.monotonic() - started
            cpu = _cpu_seconds(pid) - cpu_before
            values = _last_stats(stats) if stats.exists() else {}
            ok = int(values.get("SuccessfulCall(C)", 0))
            failed = int(values.get("FailedCall(C)", 0))
            retrans = int(values.get("Retransmissions(C)", 0))
            per = cpu / ok * 1e6 if ok else 0.0
            print(f"{rate:>9} {calls:>6} {ok:>6} {failed:>6} {retrans:>7} {elapsed:>7.2f} {ok / elapsed:>8.0f} "
                  f"{cpu / elapsed:>9.0%} {per:>8.0f}", flush=True)
            # Held: every exchange completed, none failed, and the offered rate was kept up (the run did not
            # stretch out behind a backlog of retransmissions).
            if ok == calls and failed == 0 and result.returncode == 0 and ok / elapsed >= 0.9 * rate:
                held = max(held, rate)
            else:
                first = errors.read_text(errors="replace").strip().split("\n")[:3] if errors.exists() else []
                print(f"  sipp exit {result.returncode}; first errors: {first}", flush=True)
                break
        alive = app.proc is not None and app.proc.poll() is None
        app.stop()
    print(f"highest rate held with no failed exchange: {held}/s (goal 2000/s); daemon alive throughout: {alive}")
    return 0 if held >= 2000 else 1


def _one_rate(work: Path, the_lab_phone: Any, node: Any, rate: int, seconds: float, journal: bool,
              tag: str) -> tuple[int, float, float]:
    """One daemon, one rate: (completed exchanges, seconds, daemon CPU seconds)."""
    state = work / f"state-{tag}"
    config = BASE_CONFIG.format(root=work / "root", state=state) + (
        '\n[pnp]\nenabled = true\nurl = "http://{ipv4}/$PN/"\nmax_pending_per_source = 1000000\n') + (
        "" if journal else "\n[journal]\nenabled = false\n")
    appdir = work / f"app-{tag}"
    appdir.mkdir()
    appdir.chmod(0o755)
    app = Appliance(node, appdir, config)
    app.start()
    assert app.proc is not None
    pid = app.proc.pid
    calls = int(rate * seconds)
    stats = appdir / "stats.csv"
    started = time.monotonic()
    cpu_before = _cpu_seconds(pid)
    the_lab_phone.run(["sipp", "-sf", str(SCENARIO), "-r", str(rate), "-rp", "1000", "-m", str(calls),
                       "-l", str(max(1000, rate * 4)), "-i", the_lab_phone.address, "-p", "5062", "-nostdin",
                       "-recv_timeout", "8000", "-timeout", f"{int(seconds * 4 + 20)}s", "-trace_stat", "-stf",
                       str(stats), "-fd", "1", "224.0.1.75:5060"], timeout=seconds * 4 + 40)
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(pid) - cpu_before
    app.stop()
    values = _last_stats(stats) if stats.exists() else {}
    return int(values.get("SuccessfulCall(C)", 0)), elapsed, cpu


def run_journal_ab(rates: list[int], seconds: float, repeats: int) -> int:
    """The journal's cost: a daemon with [journal] off and one with it on, interleaved, per rate."""
    print(f"journal off/on interleaved, {repeats} runs each per rate, {seconds:g} s per run "
          f"(load average at start: {os.getloadavg()[0]:.2f})")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        node = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.20/24")
        n = 0
        for rate in rates:
            per: dict[bool, list[tuple[int, float, float]]] = {False: [], True: []}
            for rep in range(repeats):
                for journal in ((False, True) if rep % 2 == 0 else (True, False)):
                    n += 1
                    ok, elapsed, cpu = _one_rate(work, phone, node, rate, seconds, journal, str(n))
                    per[journal].append((ok, elapsed, cpu))
                    print(f"  {rate:6}/s journal {'on ' if journal else 'off'}  ok {ok:6}  done/s {ok / elapsed:7.0f}  "
                          f"daemon CPU {cpu / max(ok, 1) * 1e6:6.0f} us/exchange (load {os.getloadavg()[0]:.2f})",
                          flush=True)
            us = {j: sum(c for _, _, c in v) / max(1, sum(o for o, _, _ in v)) * 1e6 for j, v in per.items()}
            done = {j: sum(o / e for o, e, _ in v) / len(v) for j, v in per.items()}
            ratios.append(us[True] / us[False])
            print(f"  {rate:6}/s on/off: done/s x{done[True] / done[False]:.3f}, CPU per exchange "
                  f"x{us[True] / us[False]:.3f}", flush=True)
    print(f"journal on / off, daemon CPU per PnP exchange (mean over rates): x{sum(ratios) / len(ratios):.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="250,500,1000,2000,3000,4000")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of offered load per rate")
    parser.add_argument("--journal-ab", type=int, default=0, metavar="N",
                        help="instead: the journal off and on, interleaved, N runs each per rate")
    args = parser.parse_args()
    return run([int(r) for r in args.rates.split(",")], args.seconds, args.journal_ab)


if __name__ == "__main__":
    raise SystemExit(main())
