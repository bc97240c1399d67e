"""Running ISC perfdhcp (Debian package kea-admin) in a lab namespace and reading its statistics.

Used by the DHCPv4 and DHCPv6 lab tests and by the benchmarks. perfdhcp prints one block per exchange
(``***Statistics for: DISCOVER-OFFER***`` …) with counters; a run's loss is measured on whole exchanges: those offered
(first message sent) that never got their last reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.lab.netns import Node

_COUNTER = re.compile(r"^\s*(sent packets|received packets|drops|orphans|rejected leases|non unique addresses)"
                      r": (\d+)", re.M)


def parse(output: str) -> dict[str, dict[str, int]]:
    """``{"DISCOVER-OFFER": {"sent packets": 2000, ...}, "REQUEST-ACK": {...}}``."""
    stats: dict[str, dict[str, int]] = {}
    for section in re.split(r"\*\*\* ?Statistics for: ", output)[1:]:
        name = section.split("***", 1)[0].strip()
        stats[name] = {key: int(value) for key, value in _COUNTER.findall(section)}
    return stats


@dataclass
class Result:
    returncode: int
    output: str
    stats: dict[str, dict[str, int]]
    first: str  # DISCOVER-OFFER or SOLICIT-ADVERTISE
    last: str  # REQUEST-ACK or REQUEST-REPLY

    @property
    def started(self) -> int:
        return self.stats.get(self.first, {}).get("sent packets", 0)

    @property
    def completed(self) -> int:
        return self.stats.get(self.last, {}).get("received packets", 0)

    @property
    def loss(self) -> float:
        """Share of the exchanges started that did not complete."""
        return 1.0 - self.completed / self.started if self.started else 1.0


def sent_for(stats: dict[str, int], limit: int, lost: int = 0) -> int:
    """The messages perfdhcp sent for ``-n limit``, checked to be between ``limit - lost`` and ``limit`` + 1%.

    perfdhcp's sender thread (multi-thread mode) tests the limit apart from the receiver, so on a loaded machine it
    sends a message or two more than ``-n`` (1,001 and 2,002 seen); the tests then expect those answered too.
    ``lost``: replies to the first message that perfdhcp's own socket dropped (it sends no second message for those).
    """
    sent = stats["sent packets"]
    over = limit // 100 + 1
    assert limit - lost <= sent <= limit + over, f"perfdhcp sent {sent} for -n {limit} ({lost} replies lost in it)"
    return sent


def check_all_answered(result: Result, client_lost: int) -> int:
    """Assert that every exchange perfdhcp sent was answered; returns the number of exchanges completed.

    The one loss allowed is perfdhcp's own receive buffer overflowing (``client_lost``: the RcvbufErrors of its
    namespace during the run) when one group commit releases a burst of replies on a loaded machine: the server did
    answer those, and their leases are in the store (the callers check that count).
    """
    first, last = result.stats[result.first], result.stats[result.last]
    dropped = first["drops"] + last["drops"]
    assert dropped <= client_lost, f"{dropped} dropped, {client_lost} of them in perfdhcp's socket:\n{result.output}"
    assert first["non unique addresses"] == last["non unique addresses"] == 0, result.output
    return last["sent packets"]


def rcvbuf_errors(node: Node) -> int:
    """UDP datagrams the node's kernel dropped for a full socket buffer (perfdhcp's losses, not the server's)."""
    lines = [line.split() for line in node.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if line.startswith("Udp:")]
    if len(lines) < 2:
        return 0
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=False)).get("RcvbufErrors", "0"))


def run(node: Node, family: int, *args: str, timeout: float = 120) -> Result:
    """``perfdhcp -4|-6 -l <the node's lab interface> ARGS``; ARGS end with the server address for DHCPv4 relay mode."""
    result = node.run(["perfdhcp", f"-{family}", "-l", node.ifname, *args], timeout=timeout)
    output = result.stdout + result.stderr
    first, last = ("DISCOVER-OFFER", "REQUEST-ACK") if family == 4 else ("SOLICIT-ADVERTISE", "REQUEST-REPLY")
    return Result(result.returncode, output, parse(output), first, last)
