"""sipp as a phone in a lab namespace: run a scenario from tests/lab/sipp/ and read the messages it logged.

Shared by the PnP lab tests and the demo.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.lab.netns import Node

SIPP = Path(__file__).resolve().parent / "sipp"


def read_messages(log: Path) -> list[tuple[str, str]]:
    """sipp's -trace_msg file -> [("sent" | "received", message text)]."""
    out: list[tuple[str, str]] = []
    if not log.exists():
        return out
    for block in log.read_text(errors="replace").split("\n----------------------------------------------- ")[0:]:
        lines = block.split("\n")
        for i, line in enumerate(lines):
            if line.startswith(("UDP message sent", "UDP message received")):
                text = "\n".join(lines[i + 2:])
                out.append(("sent" if "sent" in line else "received", text))
                break
    return out


def body(message: str) -> str:
    _, _, body = message.replace("\r\n", "\n").partition("\n\n")
    return body.rstrip("\n")


def header(message: str, name: str) -> str | None:
    for line in message.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def run_phone(phone: Node, scenario: str, workdir: Path, *extra: str, port: int = 5062,
              timeout: int = 10) -> tuple[int, list[tuple[str, str]], str]:
    log = workdir / f"{scenario}-{port}-{time.monotonic_ns()}.log"
    result = phone.run(["sipp", "-sf", str(SIPP / f"{scenario}.xml"), "-m", "1", "-i", phone.address,
                        "-p", str(port), "-nostdin", "-trace_msg", "-message_file", str(log),
                        "-timeout", f"{timeout}s", "-timeout_error", *extra, "224.0.1.75:5060"],
                       timeout=timeout + 20)
    return result.returncode, read_messages(log), result.stdout[-2000:] + result.stderr[-2000:]


def first_notify(messages: list[tuple[str, str]]) -> str:
    notifies = [m for d, m in messages if d == "received" and m.startswith("NOTIFY ")]
    assert notifies, messages
    return notifies[0]
