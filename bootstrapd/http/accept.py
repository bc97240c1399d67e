"""The plain-HTTP listeners, accepted by the service itself: the storm's request answered without a transport.

In a boot storm nearly every connection is one phone asking for one small file and closing. With a transport per
connection (``loop.create_server``) each costs, besides the answer, a transport and a protocol object, the
callbacks around them and the system calls the loop makes for any connection: ``getsockname``, ``getpeername``,
``setsockopt(TCP_NODELAY)``, ``epoll_ctl`` add and delete, a wait for the request. :class:`Acceptor` instead reads
the listening socket itself (``loop.add_reader``) and, for each connection it accepts (a bounded batch per wake-up):

- admits it (:class:`bootstrapd.http.limits.Admission`, once; a refused one gets its status line and is closed);
- reads what has arrived (``recv`` with ``MSG_DONTWAIT``: the accepted socket stays blocking for Python, the flag
  spares the ``fcntl``). The listeners carry ``TCP_DEFER_ACCEPT`` (Linux; nginx's ``listen ... deferred``): the
  kernel queues a connection for ``accept`` once its first data has come, so the request is usually there;
- answers on the spot a complete head of a request that is not keep-alive and that the fast path answers
  (:meth:`bootstrapd.http.fast.FastServer.answer`: the same bytes and the same ``http.request`` event), when the
  socket takes the whole answer at once: then closes the socket. Everything that arrived was read, so the close
  sends a FIN after the answer, not a reset;
- gives every other connection a transport (``loop.connect_accepted_socket``) with today's
  :class:`bootstrapd.http.fast.FastConnection`, already admitted and fed the bytes read (or the rest of an answer
  the socket did not take): keep-alive, pipelining, a head in pieces, the deadlines, the hand-over to aiohttp.

A client that connects and sends nothing is not accepted until the kernel's deferral ends (:data:`DEFER` seconds,
about one SYN-ACK retransmission, whose ACK then queues the connection); from then on it is an idle connection
like any other (``keepalive_timeout``). It holds no admission meanwhile, only the kernel's pending request; and
if the service stops meanwhile, closing the listener does not reset it (the kernel drops pending requests
silently): the client learns it when it sends.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import socket
from typing import TYPE_CHECKING

from bootstrapd.http.fast import FastConnection
from bootstrapd.http.head import BadHead, head_end, parse_head
from bootstrapd.http.limits import REFUSALS
from bootstrapd.log import RateLimited

if TYPE_CHECKING:
    from bootstrapd.http.fast import FastServer

log = logging.getLogger("bootstrapd.http")
_limited = RateLimited(log, interval=30.0)

BATCH = 64  # connections accepted per wake-up at most, so that a storm does not hold the loop from the rest
RECV = 0x10000  # bytes read at once; a read that fills it may have left more: that connection gets a transport
DEFER = 1  # seconds of TCP_DEFER_ACCEPT: the kernel's wait for the first data before it queues the connection
PAUSE = 1.0  # seconds without accepting after the process ran out of descriptors or memory
# Out of descriptors or memory: retrying at once would spin; the kernel keeps the connections queued meanwhile.
RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
INTERNAL_ERROR = b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
TCP_DEFER_ACCEPT = getattr(socket, "TCP_DEFER_ACCEPT", 9)


class Acceptor:
    """The plain-HTTP listening sockets of one service, read on the loop; ``close`` stops them."""

    def __init__(self, fast: FastServer) -> None:
        self.fast = fast
        self.loop = fast.loop
        self.listeners: list[socket.socket] = []
        self._paused: asyncio.TimerHandle | None = None
        self._adopting: set[asyncio.Task[None]] = set()

    def listen(self, sock: socket.socket) -> None:
        """Serve the (non-blocking, listening) socket ``sock`` from now on; the acceptor owns it."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_DEFER_ACCEPT, DEFER)
        except OSError:
            pass  # not Linux: every connection is accepted at once, and most then go by a transport
        self.listeners.append(sock)
        self.loop.add_reader(sock.fileno(), self._readable, sock)

    def close(self) -> None:
        """Stop accepting (stopping): the listening sockets are closed; connections already accepted go on until
        their own end (the fast path's and aiohttp's shutdowns close them)."""
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.listeners.clear()

    def _pause(self) -> None:
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())
        self._paused = self.loop.call_later(PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        for sock in self.listeners:
            self.loop.add_reader(sock.fileno(), self._readable, sock)

    def _readable(self, listener: socket.socket) -> None:
        # The C socket type, not socket.socket: the latter's accept() and close() are Python code (and look up the
        # family and type as enums) on the path of every connection; a connection that needs a transport gets a
        # socket.socket then (_adopt).
        family, kind = int(listener.family), int(listener.type)
        for _ in range(BATCH):
            try:
                fd, address = listener._accept()  # type: ignore[attr-defined]  # socket.accept() without its wrapper
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # the connection aborted before accept, or the process out of resources
                self.fast.service.events.count("http.accept_error")
                if exc.errno in RESOURCES:
                    log.warning("http: cannot accept connections for %.0f s: %s", PAUSE, exc.strerror or exc)
                    self._pause()
                    return
                continue
            sock = _socket.socket(family, kind, 0, fd)  # owns fd from here; checks only that fd is a socket: it is
            host = str(address[0])
            self._serve(sock, host[7:] if host.startswith("::ffff:") else host)

    def _serve(self, sock: _socket.socket, host: str) -> None:
        fast = self.fast
        service = fast.service
        admission = service.admission
        refused = admission.admit(host)
        if refused is not None:
            try:
                sock.recv(RECV, socket.MSG_DONTWAIT)  # read what came, so the close after the refusal is no reset
                sock.send(REFUSALS[refused], socket.MSG_DONTWAIT)
            except OSError:
                pass
            sock.close()
            return
        try:
            data = sock.recv(RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            data = b""  # nothing yet (the deferral ended, or no TCP_DEFER_ACCEPT): the transport waits for it
        except OSError:  # reset by the client
            admission.release(host)
            sock.close()
            return
        else:
            if not data:  # the client closed without a request
                admission.release(host)
                sock.close()
                return
        answer = None
        end = head_end(data) if len(data) < RECV else -1
        if end >= 0:
            try:
                head = parse_head(data[:end], service.settings.max_header_size)
            except BadHead:
                head = None  # the transport's path hands it to aiohttp, which answers 400
            if head is not None and not head.keep_alive:
                try:
                    answer = fast.answer(head, host)
                except Exception:  # a bug of ours (resolver, events), not the client's: hostile heads end above
                    self._internal_error(sock, host)
                    return
                if answer is None:
                    self._adopt(sock, FastConnection(fast, host, data, hand_over=True))
                    return
        if answer is None:
            self._adopt(sock, FastConnection(fast, host, data))
            return
        try:
            sent = sock.send(answer, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the client is gone (reset): nothing more to do for it
            admission.release(host)
            sock.close()
            return
        if sent == len(answer):
            admission.release(host)
            sock.close()
            return
        # The socket's buffer did not take it all: the transport sends the rest (within send_timeout), then closes.
        self._adopt(sock, FastConnection(fast, host, rest=answer[sent:]))

    def _internal_error(self, sock: _socket.socket, host: str) -> None:
        """``FastServer.answer`` raised: this connection gets a 500 and is closed, its admission released, and the
        loop goes on accepting (on a transport the loop closes it and ``connection_lost`` releases it)."""
        self.fast.service.events.count("http.internal_error")
        _limited.exception("internal", "http: internal error answering %s; it got a 500", host)
        try:
            sock.send(INTERNAL_ERROR, socket.MSG_DONTWAIT)
        except OSError:
            pass
        self.fast.service.admission.release(host)
        sock.close()

    def _adopt(self, accepted: _socket.socket, conn: FastConnection) -> None:
        """A transport for ``accepted`` with ``conn`` (admitted) as its protocol."""
        sock = socket.socket(accepted.family, accepted.type, 0, accepted.detach())
        task = self.loop.create_task(self._connect(sock, conn))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _connect(self, sock: socket.socket, conn: FastConnection) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: conn, sock)
        except Exception as exc:  # the loop could not take the socket (closing, a closed socket)
            if conn.transport is None and not conn.made:
                self.fast.service.events.count("http.accept_error")
                log.debug("http: connection from %s dropped: %s", conn.host, exc)
                conn.server.service.admission.release(conn.host)
                sock.close()
