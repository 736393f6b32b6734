"""Dynamic batching with no web imports: items in, one future each, batches out.

One loop forms batches. When a batch leaves, and on which upstream, is the
policy's call (`policies.py`: adaptive by default, eager, fixed); the loop
asks it again whenever something changes (an item arrives, a batch is
answered, an upstream's health changes) or at the time the policy named.
While no upstream can take a batch the items stay queued, so the next batch
holds all of them, up to `max_batch_size`.

The upstream side is passed in (`LanePool`), so the batcher is tested without
HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batch_proxy.backlog import Backlog
from batch_proxy.errors import (
    BatchError,
    DeadlineError,
    ItemError,
    NoUpstreamError,
    QueueFullError,
    RejectedError,
    ShuttingDownError,
    UpstreamError,
    UpstreamNotReadyError,
)
from batch_proxy.policies import BatchPolicy, Decision, Lane
from nexus_common.slow_clients import hung_up
from nexus_common.wire import BATCH_PATH, BatchReply

__all__ = [
    "BatchError",
    "BatchReply",
    "Batcher",
    "DeadlineError",
    "ItemError",
    "LanePool",
    "NoUpstreamError",
    "Pending",
    "QueueFullError",
    "RejectedError",
    "ShuttingDownError",
    "Slot",
    "UpstreamError",
    "UpstreamNotReadyError",
]

logger = logging.getLogger("nexus.proxy")


class Slot(Protocol):
    """One reserved in-flight batch on one upstream."""

    async def send(self, payloads: Sequence[bytes], path: str = BATCH_PATH) -> BatchReply:
        """The batch contract: JSON items to `POST /predict/batch` (or the model's `path`)."""
        ...

    async def exchange(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[bytes, Mapping[str, str]]:
        """Any other POST to the upstream: the 200 reply's body and headers (else a
        BatchError)."""
        ...

    def release(self) -> None: ...


Transport = Callable[[Slot, "list[Pending]"], Awaitable[BatchReply]]
"""How a batch goes upstream and comes back as one output per caller."""


async def send_items(slot: Slot, batch: list[Pending], path: str = BATCH_PATH) -> BatchReply:
    """The default transport: each caller's JSON item through the batch contract (at
    `path` for a model named on a shared upstream)."""
    return await slot.send([item.payload for item in batch], path)


class LanePool(Protocol):
    """The upstreams, as lanes a policy can choose from."""

    def lanes(self) -> Sequence[Lane]:
        """The healthy upstreams now (empty: none)."""
        ...

    def reserve(self, lane: Lane) -> Slot:
        """Count one more batch in flight on `lane`."""
        ...

    def unavailable(self) -> str:
        """Why no upstream is healthy, in one sentence."""
        ...

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever an upstream's health or concurrency changes, or a slot
        that another batcher over the same upstreams held is released."""


class BatchObserver(Protocol):
    def batch_sent(self, size: int, queue_waits: Sequence[float], fill_wait: float) -> None: ...

    def batch_done(self, seconds: float) -> None: ...


class _NullObserver:
    def batch_sent(self, size: int, queue_waits: Sequence[float], fill_wait: float) -> None:
        pass

    def batch_done(self, seconds: float) -> None:
        pass


@dataclass(slots=True)
class Pending:
    """A queued request: what the transport sends (a JSON item's bytes, or a parsed v2
    request), the caller's future, when it must be answered, and how many of the batch's
    `max_batch_size` rows it takes."""

    payload: Any
    future: asyncio.Future[tuple[Any, Any]]
    enqueued: float
    deadline: float
    size: int = 1
    connection: Any = None  # the server's connection state (slow_clients.CONNECTION) or None


@dataclass
class Batcher:
    pool: LanePool
    policy: BatchPolicy
    max_batch_size: int = 32
    max_queue: int = 1024
    # requests each priority level may hold, level 1 (the highest) first; default: one level
    queue_limits: Sequence[int] | None = None
    observer: BatchObserver = field(default_factory=_NullObserver)
    transport: Transport = send_items
    # Not the loop's clock: uvloop's loop.time() moves in whole milliseconds.
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._queue: Backlog[Pending] = Backlog(self.queue_limits or (self.max_queue,))
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing = False
        self._holding_since: float | None = None
        self._wake_queued = 1  # an arrival that makes the queue this long wakes the loop

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.pool.on_change(self._wake.set)
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
        for item in self._queue.drain():
            _settle_error(item, ShuttingDownError("the proxy is shutting down."))

    def _loop_alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # -- callers ---------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def levels(self) -> int:
        return self._queue.levels

    def submit(
        self,
        payload: Any,
        timeout_s: float,
        size: int = 1,
        priority: int | None = None,
        connection: Any = None,
    ) -> Pending:
        """Queue one request of `size` rows at `priority` (1 = highest; None: the lowest);
        its future resolves to (output, model) or raises BatchError."""
        if self._closing:
            raise ShuttingDownError("the proxy is shutting down.")
        level = self._queue.levels if priority is None else priority
        now = self.clock()
        future = asyncio.get_running_loop().create_future()
        item = Pending(payload, future, now, now + timeout_s, size, connection)
        if not self._queue.push(item, level):
            limit = self._queue.limits[level - 1]
            where = f"priority {level}'s queue" if self._queue.levels > 1 else "the queue"
            raise QueueFullError(f"{where} is full ({limit} requests); retry shortly.")
        self.policy.arrived(now)
        if len(self._queue) >= self._wake_queued:
            self._wake.set()
        return item

    # -- the loop --------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            timer: asyncio.TimerHandle | None = None
            now = self.clock()
            try:
                decision = self._step(now) if self._queue else None
            except Exception:  # never let one bad decision kill the loop
                logger.exception("batcher loop error")
                decision = Decision(wake_at=now + 0.001)
            if decision is not None and decision.lane is not None:
                continue  # a batch left; look again at once
            self._wake_queued = 1 if decision is None else min(decision.wake_queued, 1 << 30)
            if decision is not None and decision.wake_at is not None:
                timer = loop.call_later(max(0.0, decision.wake_at - now), self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def _step(self, now: float) -> Decision:
        """Ask the policy once; send a batch if it says so."""
        lanes = self.pool.lanes()
        if not lanes:
            error = NoUpstreamError(self.pool.unavailable())
            for item in self._queue.drain():
                _settle_error(item, error)
            return Decision(wake_queued=1)  # each later arrival is refused at once too
        decision = self.policy.decide(
            now,
            len(self._queue),
            self._queue.oldest(),
            lanes,
            flush=self._closing,
            patient=self._queue.patient(now),
        )
        if decision.holding and self._holding_since is None:
            self._holding_since = now
        lane = decision.lane
        if lane is None:
            return decision
        batch = self._take(now)
        if not batch:  # all were cancelled or expired: decide again over what is left
            return Decision(wake_at=now)
        fill_wait = 0.0 if self._holding_since is None else now - self._holding_since
        self._holding_since = None
        slot = self.pool.reserve(lane)
        rows = sum(item.size for item in batch)
        ticket = self.policy.sent(now, lane, rows)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._dispatch(slot, batch, ticket))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        # Counted once the batch is on its way (the task's first step runs first).
        waits = [now - item.enqueued for item in batch]
        loop.call_soon(self.observer.batch_sent, rows, waits, fill_wait)
        return decision

    def _take(self, now: float) -> list[Pending]:
        """Live requests up to max_batch_size rows, highest priority first; cancelled and
        expired ones are dropped here, and so are those whose clients the kernel knows
        have hung up (the batch is then topped up from the queue)."""

        def live(item: Pending) -> bool:
            if item.future.done():
                return False  # the caller went away or timed out
            if item.deadline <= now:
                _settle_error(item, DeadlineError("the request timed out in the queue."))
                return False
            return True

        batch: list[Pending] = []
        fresh = self._queue.take(self.max_batch_size, live)
        while fresh:
            gone = hung_up([item.connection for item in fresh])
            for item, left in zip(fresh, gone, strict=True):
                if left:
                    item.future.cancel()  # gone before its batch left: never sent
                else:
                    batch.append(item)
            if not any(gone):
                break
            room = self.max_batch_size - sum(item.size for item in batch)
            fresh = self._queue.take(room, live, topping_up=bool(batch))
        return batch

    async def _dispatch(self, slot: Slot, batch: list[Pending], ticket: object) -> None:
        """One upstream call; every future in the batch is settled, whatever happens.

        What comes first depends on the queue. With items waiting, the loop is woken and
        the callers are answered a turn later: ready callbacks run in order, so the next
        batch is formed and written upstream before this one's callers are written back
        (at 800 items/s that kept the upstream idle 3 ms a run). With none waiting, the
        callers are answered at once and the policy learns from the batch after them, in
        the same loop turn: the next batch is made of these callers coming back, so that
        work is better done while they are on their way.
        """
        started = self.clock()
        reply: BatchReply | None = None
        failure: BatchError | None = None
        try:
            reply = await self.transport(slot, batch)
            if len(reply.outputs) != len(batch):
                raise UpstreamError(
                    f"the upstream returned {len(reply.outputs)} outputs for {len(batch)} inputs."
                )
        except BatchError as exc:
            failure = exc
        except Exception as exc:
            logger.exception("unexpected error sending a batch")
            failure = UpstreamError(f"the batch failed: {exc}.")
        finally:
            slot.release()
            now = self.clock()
            ok = failure is None and reply is not None
            answers_first = ok and not self._queue
            if not answers_first:
                self._answered(now, ticket, ok, now - started)
        if failure is not None or reply is None:
            error = failure or UpstreamError("the batch was cancelled.")
            for item in batch:
                _settle_error(item, error)
            return
        loop = asyncio.get_running_loop()
        if answers_first:
            _settle(batch, reply)
            # after the answers' callbacks, which _settle queued
            loop.call_soon(self._answered, now, ticket, ok, now - started)
        else:
            # after the loop's wakeup, which forms the next batch and queues its task
            loop.call_soon(_settle, batch, reply)

    def _answered(self, now: float, ticket: object, ok: bool, seconds: float) -> None:
        """A batch is back: the policy learns from it, the metrics count it, the loop
        decides again."""
        self.policy.answered(now, ticket, ok)
        self.observer.batch_done(seconds)
        self._wake.set()


def _settle(batch: list[Pending], reply: BatchReply) -> None:
    """Each caller its output, or its item's error (the wire's `errors`)."""
    model, errors = reply.model, reply.errors
    for index, (item, output) in enumerate(zip(batch, reply.outputs, strict=True)):
        if item.future.done():
            continue
        why = errors.get(index) if errors else None
        if why is None:
            item.future.set_result((output, model))
        else:
            item.future.set_exception(ItemError(why, model))


def _settle_error(item: Pending, exc: BatchError) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
