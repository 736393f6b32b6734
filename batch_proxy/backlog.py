"""The queued requests of one batcher, by priority: a bounded queue per level, batches
taken from the highest level first.

Level 1 is the highest; a request that names none gets the lowest (`levels`), so
priorities are opt-in. Each level has its own bound, so a flood at a low level fills
only its own queue: its callers are refused at once while higher levels go on. Pure
bookkeeping (no clock, no I/O): the batcher and the fake-clock simulation share it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

# How long after requests of two levels the batches stay patient (see `Backlog.patient`).
PATIENCE_S = 5.0


class Queued(Protocol):
    @property
    def enqueued(self) -> float: ...

    @property
    def size(self) -> int: ...


T = TypeVar("T", bound=Queued)


class Backlog(Generic[T]):
    def __init__(self, limits: Sequence[int]) -> None:
        """`limits[i]`: how many requests level i + 1 may hold."""
        self.limits = tuple(limits)
        self._levels: list[collections.deque[T]] = [collections.deque() for _ in limits]
        self._count = 0
        self._seen = [-float("inf")] * len(self.limits)  # last arrival at each level

    @property
    def levels(self) -> int:
        return len(self.limits)

    def push(self, item: T, level: int) -> bool:
        """Queue `item` at `level` (1 = highest); False when that level is full."""
        queue = self._levels[level - 1]
        if len(queue) >= self.limits[level - 1]:
            return False
        queue.append(item)
        self._count += 1
        self._seen[level - 1] = item.enqueued
        return True

    def __len__(self) -> int:
        return self._count

    def depth(self, level: int) -> int:
        return len(self._levels[level - 1])

    def oldest(self) -> float:
        """When the longest-waiting request was queued (any level)."""
        return min(q[0].enqueued for q in self._levels if q)

    def patient(self, now: float) -> bool:
        """Whether batches should wait for the upstream to be about to free, even full: while
        requests of more than one level arrive, a batch sent early would sit at the upstream
        in front of the next higher-priority one. With one level in use, never (a full batch
        goes at once: nothing can overtake it, and an early send hides the round trip)."""
        recent = sum(1 for seen in self._seen if now - seen < PATIENCE_S)
        return recent > 1

    def take(self, max_rows: int, live: Callable[[T], bool], topping_up: bool = False) -> list[T]:
        """Up to `max_rows` rows (at least one request, unless `topping_up` a batch already
        under way), highest level first, in arrival order within a level; requests `live`
        rejects are dropped on the way."""
        batch: list[T] = []
        rows = 0
        for queue in self._levels:
            while queue and ((not batch and not topping_up) or rows + queue[0].size <= max_rows):
                item = queue.popleft()
                self._count -= 1
                if not live(item):
                    continue
                batch.append(item)
                rows += item.size
            if queue and (batch or topping_up):
                break  # this level still has requests: none of a lower level jumps them
        return batch

    def drain(self) -> Iterator[T]:
        for queue in self._levels:
            while queue:
                self._count -= 1
                yield queue.popleft()
