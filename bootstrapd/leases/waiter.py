"""What a reply held back for its lease commit is told once the commit is done (``Store.commit_then``).

One :class:`Waiter` per service (the DHCP adapters are their own), with the reply handed back to it: the store
queues the pair as it is. Before, every reply built three closures (sent, failed, lost) that the store then
called; a reply is one commit of thousands a second in a boot storm, and the closures were 0.5 us of the event
loop's time per reply of the 0.7 us the hand-over cost (measured with timeit on the DHCPv4 loop's machine).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bootstrapd.leases.store import Lease


class Waiter(Protocol):
    def committed(self, reply: Any) -> None:
        """The reply's leases are durable: it may leave."""

    def commit_failed(self, reply: Any, error: BaseException) -> None:
        """The commit failed: the reply must not leave (its client retries)."""

    def commit_lost(self, reply: Any, winners: list[Lease]) -> None:
        """A shared store: an address of the reply is another client's (``winners``: the rows that hold them)."""


class LeaseTaken(Exception):
    """A lease lost to another client's row (for a waiter that has no use for the winners themselves)."""

    def __init__(self, winners: list[Lease]) -> None:
        super().__init__(f"{len(winners)} address(es) held by another client")
        self.winners = winners


class Callbacks:
    """A :class:`Waiter` of plain callbacks, for the callers that are not on a hot path (tools, tests, a lone
    commit). Without ``lost``, a lost lease is a failure with :class:`LeaseTaken`."""

    __slots__ = ("failed", "lost", "send")

    def __init__(self, send: Callable[[], None], failed: Callable[[BaseException], None],
                 lost: Callable[[list[Lease]], None] | None = None) -> None:
        self.send, self.failed, self.lost = send, failed, lost

    def committed(self, reply: Any) -> None:
        self.send()

    def commit_failed(self, reply: Any, error: BaseException) -> None:
        self.failed(error)

    def commit_lost(self, reply: Any, winners: list[Lease]) -> None:
        if self.lost is not None:
            self.lost(winners)
        else:
            self.failed(LeaseTaken(winners))
