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


def sent_for(stats: dict[str, int], limit: int) -> int:
    """The messages perfdhcp sent for ``-n limit``, checked to be ``limit`` or one more.

    perfdhcp's sender thread (multi-thread mode) tests the limit after it sends, so on a loaded machine it sometimes
    sends one message more than ``-n``; the tests then expect that one answered too.
    """
    sent = stats["sent packets"]
    assert limit <= sent <= limit + 1, f"perfdhcp sent {sent} for -n {limit}"
    return sent


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
