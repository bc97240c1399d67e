"""``server.cpu`` (bootstrapd/cpus.py): the event loop and its writer threads on one CPU, everything else free.

The real daemon in the lab, with its journal (a writer thread), DHCPv4 (the lease writer), TFTP transfer workers
(processes) and a download that goes through the file readers (a thread pool): the CPUs each thread and each
worker process may run on are read from /proc.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tools
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Lab

CONFIG = """
[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.199"

[tftp]
enabled = true
large_file_size = 65536
workers = 2
"""


def _allowed(path: Path) -> set[int]:
    """The CPUs in a /proc status file's Cpus_allowed_list, e.g. "0-1,3"."""
    for line in path.read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            cpus: set[int] = set()
            for part in line.split(":", 1)[1].strip().split(","):
                first, _, last = part.partition("-")
                cpus.update(range(int(first), int(last or first) + 1))
            return cpus
    raise AssertionError(f"no Cpus_allowed_list in {path}")


def _threads(pid: int) -> dict[int, set[int]]:
    return {int(task.name): _allowed(task / "status") for task in Path(f"/proc/{pid}/task").iterdir()}


def _workers(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"bootstrapd.tftp.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                children.append(int(child))
    return children


def _run(lab: Lab, workdir: Path, cpu: str) -> tuple[Appliance, dict[int, set[int]], list[set[int]]]:
    require_tools("curl")
    ap = lab.add_appliance()
    phone = lab.add_phone(ipv4="10.77.0.10/24")
    config = BASE_CONFIG.format(root=workdir / "root", state=workdir / "state")
    config = config.replace("[dhcp4]\nenabled = false\n", "")
    app = Appliance(ap, workdir, config.replace('url = "tftp://{ipv4}/"', f'url = "tftp://{{ipv4}}/"\ncpu = {cpu}')
                    + CONFIG)
    (app.root / "fw.bin").write_bytes(os.urandom(300_000))
    (app.root / "a.cfg").write_bytes(b"x = 1\n")
    app.start()
    assert app.proc is not None
    for name in ("fw.bin", "a.cfg"):  # a worker's transfer, and reads through the file readers
        phone.run(["curl", "-sS", "--max-time", "30", "--tftp-blksize", "1428", "-o", str(workdir / name),
                   f"tftp://10.77.0.1/{name}"], check=True)
        assert (workdir / name).read_bytes() == (app.root / name).read_bytes()
    threads = _threads(app.proc.pid)
    workers = [_allowed(Path(f"/proc/{pid}/status")) for pid in _workers(app.proc.pid)]
    return app, threads, workers


def test_the_loop_and_its_writers_share_one_cpu_the_rest_keep_them_all(lab: Lab, workdir: Path) -> None:
    everything = os.sched_getaffinity(0)
    app, threads, workers = _run(lab, workdir, '"auto"')
    try:
        assert app.proc is not None
        main = threads[app.proc.pid]
        assert len(workers) == 2 and all(w == everything for w in workers), workers
        if len(everything) < 2:  # nothing to choose between: nothing is pinned
            assert main == everything
            return
        assert len(main) == 1, main
        pinned = [tid for tid, cpus in threads.items() if cpus == main]
        # The loop, the lease writer and the journal writer at least; the file readers and executors are free.
        assert len(pinned) >= 3, threads
        assert any(cpus == everything for cpus in threads.values()), threads
        assert all(cpus in (main, everything) for cpus in threads.values()), threads
        assert f" cpu={next(iter(main))}" in app.log()  # the ready line says where it runs
    finally:
        app.stop()


def test_off_leaves_every_thread_to_the_scheduler(lab: Lab, workdir: Path) -> None:
    everything = os.sched_getaffinity(0)
    app, threads, workers = _run(lab, workdir, '"off"')
    try:
        assert all(cpus == everything for cpus in threads.values()), threads
        assert len(workers) == 2 and all(w == everything for w in workers), workers
        assert " cpu=any" in app.log()
    finally:
        app.stop()


@pytest.mark.parametrize("value, message", [
    ("4096", "server.cpu = 4096: not one of the CPUs this process may use"),
    ('"fast"', "server.cpu: must be \"auto\", \"off\" or a CPU number, not 'fast'"),
])
def test_a_cpu_it_may_not_use_is_a_clear_error(workdir: Path, value: str, message: str) -> None:
    config = workdir / "bootstrapd.toml"
    config.write_text(f'[server]\ninterface = "nonexistent0"\nroot = "{workdir}"\nstate_dir = "{workdir}/state"\n'
                      f'cpu = {value}\n[dhcp4]\nenabled = false\n')
    result = subprocess.run([sys.executable, "-m", "bootstrapd", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
