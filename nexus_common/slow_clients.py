"""An HTTP protocol that gives each request a deadline to arrive (slowloris, slow bodies).

uvicorn times out an idle keep-alive connection but not one that is sending: a client
that sends its headers or body a byte at a time holds its connection (and, once the
headers are in, the request's task) for as long as it likes. Both servers run this
subclass of uvicorn's httptools protocol instead: from a connection's first byte (or
its opening) to the end of each request's body it has `read_timeout_s`; past that it
gets a 408 (when nothing was answered yet) and the connection is closed. One timer per
request, armed and cancelled in C by uvloop: well under a microsecond of the ~100 µs a
proxied request costs.

Shared by `nexus-proxy` and `nexus-model-server` (as `runner` is). `hung_up` asks the
kernel which of several requests' clients have already gone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import select
import weakref
from collections.abc import Sequence
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("nexus.http")

DEFAULT_READ_TIMEOUT_S = 30.0
# The scope extension holding the request's connection state: an object whose
# `disconnected` turns True the moment the client goes (a weak proxy of uvicorn's request
# cycle), so the proxy can drop a queued item before it is batched, not only once its
# watcher runs.
CONNECTION = "nexus.connection"

# The peer closed its side: Linux reports it before the event loop has read the EOF.
_PEER_GONE = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR

_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a `read_timeout_s` deadline on every request."""

    _deadline: asyncio.TimerHandle | None = None
    _headers_in = False  # of the request now arriving

    def __init__(self, *args: Any, read_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout_s = read_timeout_s

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_in = False
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._headers_in = True
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
            # A proxy, not the cycle: the cycle holds the scope, so the scope holding the
            # cycle made each request a reference cycle (about ten objects) that only the
            # garbage collector freed: a ~150 us collection on every batch's return trip
            # at 32 callers, and a ~1.3 ms one every tenth.
            extensions[CONNECTION] = weakref.proxy(cycle)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._headers_in else None
        if cycle is None or not cycle.response_started:
            self.transport.write(_timed_out(self.read_timeout_s))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app reads http.disconnect; its reply is dropped
            cycle.message_event.set()
        logger.info("closed a connection: its request took over %g s", self.read_timeout_s)
        self.transport.close()


def guarded_protocol(
    read_timeout_s: float, protocol: type[GuardedProtocol] = GuardedProtocol, **params: Any
) -> type[asyncio.Protocol]:
    """`protocol` (GuardedProtocol or a subclass) with its parameters bound, for
    `uvicorn.Config(http=...)`: uvicorn calls it with each connection's arguments as it
    would call a class, and uses nothing else of it."""
    if read_timeout_s <= 0:
        raise ValueError(f"read_timeout_s must be positive, not {read_timeout_s}.")
    bound = functools.partial(protocol, read_timeout_s=read_timeout_s, **params)
    return cast("type[asyncio.Protocol]", bound)


def _timed_out(read_timeout_s: float) -> bytes:
    message = f'{{"error": "the request did not arrive within {read_timeout_s:g} s."}}'.encode()
    return _TIMED_OUT % (len(message), message)


def hung_up(connections: Sequence[Any]) -> list[bool]:
    """Which of these requests' clients have closed their connection, as the kernel sees
    it now: one poll(2) for all of them, so a client that hung up while the event loop
    was busy (a storm of 5,000 hang-ups is read over many loop turns) is not sent to the
    model. `connections` are CONNECTION states (or None: unknown, taken as still there).
    """
    gone = [False] * len(connections)
    poller = select.poll()
    where: dict[int, int] = {}
    for index, connection in enumerate(connections):
        if connection is None:
            continue
        try:
            if connection.disconnected or connection.transport.is_closing():
                gone[index] = True  # known already (and its descriptor may be closed)
                continue
            fd = connection.transport.get_extra_info("socket").fileno()
        except ReferenceError:  # the request is over (CONNECTION is a weak proxy)
            gone[index] = True
            continue
        where[fd] = index
        poller.register(fd, _PEER_GONE)
    if where:
        for fd, _ in poller.poll(0):
            gone[where[fd]] = True
    return gone
