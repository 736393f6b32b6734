"""Dynamic batching with no web imports: items in, one future each, batches out.

One loop forms batches. A batch closes when it is *sent*: in the eager policy
(the default) as soon as an upstream slot is free, whatever is queued leaves,
so an idle model never waits and batches grow with load by themselves; in the
fixed policy it waits for `max_batch_size` items or for its oldest item to
have waited `max_wait`. Either way, while every slot is busy the batch keeps
filling up to `max_batch_size`.

The upstream side is passed in (`SlotPool`), so the batcher is tested without
HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batch_proxy.wire import BatchReply

__all__ = [
    "BatchError",
    "BatchReply",
    "Batcher",
    "DeadlineError",
    "ItemError",
    "NoUpstreamError",
    "Pending",
    "QueueFullError",
    "ShuttingDownError",
    "Slot",
    "SlotPool",
    "UpstreamError",
]

logger = logging.getLogger("nexus.proxy")


class BatchError(Exception):
    """A failure that answers every caller of a batch (or one caller) with one sentence."""

    status = 502

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamError(BatchError):
    """The upstream could not be reached or answered badly: 502."""


class NoUpstreamError(UpstreamError):
    """No healthy upstream exists to take a batch: 502 at once rather than a long wait."""


class QueueFullError(BatchError):
    """The queue holds `max_queue` items: 503 with Retry-After."""

    status = 503


class ShuttingDownError(BatchError):
    status = 503


class DeadlineError(BatchError):
    """The item's deadline passed before its batch was formed: 504."""

    status = 504


class ItemError(BatchError):
    """The upstream answered the batch but failed this item (the wire's `errors`): 422."""

    status = 422

    def __init__(self, message: str, model: Any) -> None:
        super().__init__(message)
        self.model = model


class Slot(Protocol):
    """One reserved in-flight batch on one upstream."""

    async def send(self, payloads: Sequence[bytes]) -> BatchReply: ...

    def release(self) -> None: ...


class SlotPool(Protocol):
    async def acquire(self) -> Slot:
        """Wait for a free in-flight slot; raise NoUpstreamError if no upstream is healthy."""
        ...


class BatchObserver(Protocol):
    def batch_sent(self, size: int, queue_waits: Sequence[float]) -> None: ...

    def batch_done(self, seconds: float) -> None: ...


class _NullObserver:
    def batch_sent(self, size: int, queue_waits: Sequence[float]) -> None:
        pass

    def batch_done(self, seconds: float) -> None:
        pass


@dataclass(slots=True)
class Pending:
    """A queued item: its raw JSON, the caller's future, and when it must be answered."""

    payload: bytes
    future: asyncio.Future[tuple[Any, Any]]
    enqueued: float
    deadline: float


@dataclass
class Batcher:
    pool: SlotPool
    max_batch_size: int = 32
    max_wait_s: float = 0.050
    eager: bool = True
    max_queue: int = 1024
    observer: BatchObserver = field(default_factory=_NullObserver)

    def __post_init__(self) -> None:
        self._queue: collections.deque[Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Send what is queued, wait for in-flight batches, then fail anything left."""
        self._closing = True
        self._wake.set()
        deadline = time.monotonic() + drain_timeout_s
        while self._queue and time.monotonic() < deadline and self._loop_alive():
            await asyncio.sleep(0.01)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=max(0.0, deadline - time.monotonic()))
        for task in self._inflight:
            task.cancel()
        while self._queue:
            _settle_error(self._queue.popleft(), ShuttingDownError("the proxy is shutting down."))

    def _loop_alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # -- callers ---------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(self, payload: bytes, timeout_s: float) -> Pending:
        """Queue one item; its future resolves to (output, model) or raises BatchError."""
        if self._closing:
            raise ShuttingDownError("the proxy is shutting down.")
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(f"the queue is full ({self.max_queue} items); retry shortly.")
        loop = asyncio.get_running_loop()
        now = loop.time()
        item = Pending(payload, loop.create_future(), now, now + timeout_s)
        self._queue.append(item)
        if len(self._queue) == 1 or len(self._queue) >= self.max_batch_size:
            self._wake.set()
        return item

    # -- the loop --------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._next_batch()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad batch kill the loop
                logger.exception("batcher loop error")

    async def _next_batch(self) -> None:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        if not self.eager and not self._closing:
            await self._fill_or_due()
        try:
            slot = await self.pool.acquire()
        except NoUpstreamError as exc:
            for item in self._take():
                _settle_error(item, exc)
            return
        batch = self._take()
        if not batch:
            slot.release()
            return
        task = asyncio.get_running_loop().create_task(self._dispatch(slot, batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _fill_or_due(self) -> None:
        """Fixed policy: wait until a full batch is queued or the oldest item is due."""
        loop = asyncio.get_running_loop()
        while len(self._queue) < self.max_batch_size and not self._closing:
            remaining = self._queue[0].enqueued + self.max_wait_s - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _take(self) -> list[Pending]:
        """Up to max_batch_size live items; cancelled and expired ones are dropped here."""
        batch: list[Pending] = []
        now = asyncio.get_running_loop().time()
        queue = self._queue
        while queue and len(batch) < self.max_batch_size:
            item = queue.popleft()
            if item.future.done():
                continue  # the caller went away or timed out
            if item.deadline <= now:
                _settle_error(item, DeadlineError("the request timed out in the queue."))
                continue
            batch.append(item)
        return batch

    async def _dispatch(self, slot: Slot, batch: list[Pending]) -> None:
        """One upstream call; every future in the batch is settled, whatever happens."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.observer.batch_sent(len(batch), [started - item.enqueued for item in batch])
        try:
            reply = await slot.send([item.payload for item in batch])
            if len(reply.outputs) != len(batch):
                raise UpstreamError(
                    f"the upstream returned {len(reply.outputs)} outputs for {len(batch)} inputs."
                )
        except BatchError as exc:
            for item in batch:
                _settle_error(item, exc)
        except Exception as exc:
            logger.exception("unexpected error sending a batch")
            for item in batch:
                _settle_error(item, UpstreamError(f"the batch failed: {exc}."))
        else:
            model, errors = reply.model, reply.errors
            for index, (item, output) in enumerate(zip(batch, reply.outputs, strict=True)):
                if item.future.done():
                    continue
                failure = errors.get(index) if errors else None
                if failure is None:
                    item.future.set_result((output, model))
                else:
                    item.future.set_exception(ItemError(failure, model))
        finally:
            slot.release()
            self.observer.batch_done(loop.time() - started)


def _settle_error(item: Pending, exc: BatchError) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
