"""A request's life over ASGI, past its headers: reading the body (bounded), and noticing a
client that goes away while its item waits in the queue."""

from __future__ import annotations

import asyncio

from batch_proxy.answers import Receive
from batch_proxy.batcher import Pending
from batch_proxy.errors import BodyTooLarge, ClientGone
from nexus_common.errors import V2Error


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client left before its body arrived.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge("the body passed the limit.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


async def _cancel_on_disconnect(receive: Receive, item: Pending) -> None:
    """After the body, the only message left is http.disconnect: drop the item then."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            item.future.cancel()
            return


class DisconnectWatcher:
    """Watches for the client going away, from `WATCH_AFTER_S` after the item was queued."""

    __slots__ = ("_handle", "_item", "_receive", "_task")

    def __init__(self, receive: Receive, item: Pending) -> None:
        self._receive, self._item = receive, item
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        if not self._item.future.done():
            self._task = asyncio.get_running_loop().create_task(
                _cancel_on_disconnect(self._receive, self._item)
            )

    def cancel(self) -> None:
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


WATCH_AFTER_S = 0.05


def priority_level(asked: object, levels: int) -> int:
    """The level of a request's priority (1 = highest; none asked: the lowest, `levels`);
    V2Error naming the range for anything else."""
    if asked is None or asked == 0:  # 0: the v2 protocol's "default priority"
        return levels
    try:
        level = int(str(asked))
    except ValueError:
        level = 0
    if not 1 <= level <= levels:
        raise V2Error(f"priority must be a whole number from 1 to {levels}, not {asked!r}.")
    return level
