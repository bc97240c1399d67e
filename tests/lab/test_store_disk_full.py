"""The lease store on a full file system (issue #8 item 15): a real tmpfs of 1 MiB, filled up, in a private mount
namespace (``unshare --mount``: the mount disappears with the process, even if the test is killed).

The commit fails with SQLite's own "database or disk is full" (not the "cannot rollback" a blind ROLLBACK used to put
in its place), counted as ``store.disk_full``; its replies are withheld; once there is room again the next commit
succeeds and the store holds exactly what was committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import require_root, require_tools

SCRIPT = textwrap.dedent("""
    import asyncio, json, logging, os, subprocess, sys, tempfile
    from ipaddress import IPv4Address
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from bootstrapd.events import Events
    from bootstrapd.leases.store import Lease4, LeaseStore, connect, read_leases4
    from bootstrapd.leases.waiter import Callbacks

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    mount = Path(tempfile.mkdtemp(prefix="bdt-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    events = Events()

    def leases(first, n):
        return [Lease4(IPv4Address(0x0A4D0000 + first + i), bytes(6), b"client-id" * 20, 100.0) for i in range(n)]

    async def commit(store, batch):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        store.commit_then(batch, Callbacks(lambda: done.set_result("sent"), lambda exc: done.set_result(str(exc))),
                          None)
        return await done

    async def main():
        store = LeaseStore(mount / "leases.sqlite3", events=events)
        store.start(asyncio.get_running_loop())
        result = {{"first": await commit(store, leases(0, 10))}}
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, bytes(65536))
        except OSError:
            pass
        try:  # the last few blocks too
            while True:
                os.write(fd, bytes(512))
        except OSError:
            pass
        os.close(fd)
        result["full"] = await commit(store, leases(100, 2000))
        result["counters"] = dict(events.counters)
        os.unlink(mount / "filler")
        result["after"] = await commit(store, leases(5000, 10))
        store.close()
        rows = read_leases4(connect(mount / "leases.sqlite3", readonly=True))
        result["rows"] = sorted(int(r.address) - 0x0A4D0000 for r in rows)
        print(json.dumps(result))

    try:
        asyncio.run(main())
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        os.rmdir(mount)
""")


def test_disk_full_is_reported_as_disk_full_counted_and_recovered_from(tmp_path: Path) -> None:
    require_root()
    require_tools("unshare", "mount")
    script = tmp_path / "full.py"
    script.write_text(SCRIPT.format(root=str(Path(__file__).resolve().parents[2])))
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["first"] == "sent"
    assert "database or disk is full" in result["full"], result  # SQLite's error, not the ROLLBACK's
    assert result["counters"].get("store.disk_full") == 1, result
    assert result["after"] == "sent"  # the store recovered once there was room
    assert result["rows"] == list(range(10)) + list(range(5000, 5010))  # nothing of the failed batch
    assert "disk full" in proc.stderr and "database or disk is full" in proc.stderr
    assert "cannot rollback" not in proc.stderr
