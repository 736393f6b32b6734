"""Callers, the batcher's loop and upstreams as a discrete-event simulation on a fake clock.

A policy is driven exactly as `Batcher` drives it (arrived, decide, sent,
answered; decide again on every event or at the time it names), with no asyncio
and no sleeping: the tests of a policy are exact, repeatable and fast.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from batch_proxy.backlog import Backlog
from batch_proxy.policies import BatchPolicy, Lane


@dataclass(frozen=True)
class Model:
    """An upstream: `concurrency` batches at once, each `fixed_s + per_item_s * n`."""

    fixed_s: float = 0.020
    per_item_s: float = 0.0
    concurrency: int = 1
    rtt_s: float = 0.0003  # network round trip between proxy and upstream, half each way

    def seconds(self, size: int) -> float:
        return self.fixed_s + self.per_item_s * size

    def ideal(self, clients: int, max_batch: int = 32) -> float:
        """Items/s with every waiting caller served in as few full runs as the slots allow."""
        items = min(clients, self.concurrency * max_batch)
        return items / self.seconds(math.ceil(items / self.concurrency))

    def capacity(self, max_batch: int = 32) -> float:
        return self.concurrency * max_batch / self.seconds(max_batch)


@dataclass
class Sent:
    at: float
    size: int
    waits: list[float]
    held: bool  # the policy held it back, with a slot free, to collect more items


@dataclass
class _Item:
    enqueued: float
    caller: int
    priority: int = 1
    size: int = 1


@dataclass
class _Lane:
    key: str
    model: Model
    outstanding: int = 0
    free_at: list[float] = field(default_factory=list)  # when each of its slots frees


class Simulation:
    def __init__(
        self,
        policy: BatchPolicy,
        model: Model,
        *,
        upstreams: int = 1,
        max_batch: int = 32,
        return_lag: Callable[[int], float] | None = None,
        queue_limits: tuple[int, ...] = (1 << 30,),
    ) -> None:
        """`return_lag(i)`: how long after its answer the i-th caller of a batch is back
        (closed-loop callers); default: 0.2 ms plus 0.05 ms per caller answered before it."""
        self.policy = policy
        self.max_batch = max_batch
        self.now = 0.0
        self.sent: list[Sent] = []
        self.answered: list[tuple[float, float]] = []  # (arrival, latency)
        self._priorities: list[int] = []  # of each answered item
        self._lanes = [
            _Lane(f"u{i}", model, free_at=[0.0] * model.concurrency) for i in range(upstreams)
        ]
        self._queue: Backlog[_Item] = Backlog(queue_limits)
        self.rejected: list[tuple[float, int]] = []  # (when, priority): refused, queue full
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._timer = 0
        self._holding = False
        self._wake_queued = 1
        self._closed_loop = False
        self._return_lag = return_lag or (lambda i: 0.0002 + 0.00005 * i)

    # -- load ----------------------------------------------------------------------

    def closed_loop(self, clients: int, start: float = 0.0) -> None:
        """`clients` callers that each send again as soon as they are answered."""
        self._closed_loop = True
        for caller in range(clients):
            self._at(start + caller * 1e-6, functools.partial(self._arrive, caller))

    def poisson(
        self, rate: float, until: float, seed: int = 1, priority: int = 1, start: float = 0.0
    ) -> None:
        """Independent arrivals at `rate` per second from `start` until `until`."""
        rng = random.Random(seed)
        t = start + rng.expovariate(rate)
        while t < until:
            self._at(t, functools.partial(self._arrive, -1, priority))
            t += rng.expovariate(rate)

    def run(self, until: float) -> Simulation:
        while self._events and self._events[0][0] <= until:
            self.now, _, event = heapq.heappop(self._events)
            event()
        self.now = until
        return self

    # -- what was seen ---------------------------------------------------------------

    def sizes(self, after: float = 0.0) -> list[int]:
        return [b.size for b in self.sent if b.at >= after]

    def throughput(self, after: float) -> float:
        done = [a + lat for a, lat in self.answered if a + lat >= after]
        return len(done) / (self.now - after)

    def latency(
        self, quantile: float, after: float = 0.0, before: float = math.inf, priority: int = 0
    ) -> float:
        values = sorted(
            lat
            for (a, lat), p in zip(self.answered, self._priorities, strict=True)
            if after <= a < before and priority in (0, p)
        )
        return values[min(len(values) - 1, int(quantile * len(values)))]

    def median_wait(self, after: float = 0.0) -> float:
        return statistics.median(w for b in self.sent if b.at >= after for w in b.waits)

    # -- the batcher's loop ------------------------------------------------------------

    def _at(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), event))

    def _arrive(self, caller: int, priority: int = 1) -> None:
        if not self._queue.push(_Item(self.now, caller, priority), priority):
            self.rejected.append((self.now, priority))
            return
        self.policy.arrived(self.now)
        if len(self._queue) >= self._wake_queued:
            self._step()

    def _step(self) -> None:
        self._timer += 1  # any event cancels the pending timer, as in Batcher._run
        while self._queue:
            lanes = [
                Lane(ln.key, ln.model.concurrency, ln.outstanding, ln.model.rtt_s)
                for ln in self._lanes
            ]
            decision = self.policy.decide(
                self.now,
                len(self._queue),
                self._queue.oldest(),
                lanes,
                flush=False,
                patient=self._queue.patient(self.now),
            )
            self._holding = self._holding or decision.holding
            if decision.lane is None:
                self._wake_queued = decision.wake_queued
                if decision.wake_at is not None:
                    timer = self._timer
                    self._at(max(self.now, decision.wake_at), functools.partial(self._wake, timer))
                return
            batch = self._queue.take(self.max_batch, lambda item: True)
            waits = [self.now - i.enqueued for i in batch]
            self.sent.append(Sent(self.now, len(batch), waits, self._holding))
            self._holding = False
            ticket = self.policy.sent(self.now, decision.lane, len(batch))
            self._upstream(decision.lane.key, batch, ticket)
        if not self._queue:
            self._wake_queued = 1

    def _wake(self, timer: int) -> None:
        if timer == self._timer:
            self._step()

    def _upstream(self, key: str, batch: list[_Item], ticket: object) -> None:
        lane = next(ln for ln in self._lanes if ln.key == key)
        lane.outstanding += 1
        model = lane.model
        arrives = self.now + model.rtt_s / 2
        slot = min(range(len(lane.free_at)), key=lane.free_at.__getitem__)
        finish = max(arrives, lane.free_at[slot]) + model.seconds(len(batch))
        lane.free_at[slot] = finish
        self._at(finish + model.rtt_s / 2, lambda: self._reply(lane, batch, ticket))

    def _reply(self, lane: _Lane, batch: list[_Item], ticket: object) -> None:
        lane.outstanding -= 1
        self.policy.answered(self.now, ticket, True)
        for index, item in enumerate(batch):
            self.answered.append((item.enqueued, self.now - item.enqueued))
            self._priorities.append(item.priority)
            if self._closed_loop:
                caller = item.caller
                self._at(
                    self.now + self._return_lag(index), functools.partial(self._arrive, caller)
                )
        self._step()


# The simulated models bench/proxy_batching.py measures the proxy on.
MODELS = {
    "20ms": Model(fixed_s=0.020),
    "linear": Model(fixed_s=0.005, per_item_s=0.0005),
    "two": Model(fixed_s=0.020, concurrency=2),
}


def open_loop_floor_ms(model: Model, direct_ms: float, hop_ms: float) -> float:
    """The lowest open-loop p50 any batcher can reach here. Batches start at least the
    shortest batch time C apart on each of k slots, so with Poisson arrivals (which see
    the time average) at most k·w/C of them wait less than w: the median waits at least
    C/2k, then runs at least C, plus the direct call's HTTP and the proxy's hop."""
    shortest_ms = model.seconds(1) * 1000
    overhead_ms = direct_ms - shortest_ms
    return shortest_ms * (1 + 1 / (2 * model.concurrency)) + overhead_ms + max(hop_ms, 0.0)
