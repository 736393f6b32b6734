"""The batcher alone, with an in-memory slot pool: no HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from batch_proxy.batcher import Batcher, BatchReply, Pending, Slot
from batch_proxy.errors import NoUpstreamError, QueueFullError, ShuttingDownError, UpstreamError
from batch_proxy.policies import AdaptivePolicy, EagerPolicy, Lane
from nexus_common.slow_clients import hung_up


class FakeSlot:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    async def send(self, payloads: Sequence[bytes], path: str = "/predict/batch") -> BatchReply:
        self.pool.batches.append(list(payloads))
        await asyncio.sleep(self.pool.latency)
        if self.pool.fail:
            raise self.pool.fail
        return BatchReply(outputs=[p.decode() for p in payloads], model="m")

    async def exchange(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[bytes, Mapping[str, str]]:
        self.pool.batches.append([path.encode(), body])
        await asyncio.sleep(self.pool.latency)
        return body, headers

    def release(self) -> None:
        self.pool.busy -= 1


class FakePool:
    """One upstream running one batch at a time, `latency` seconds each, in memory."""

    def __init__(self, latency: float = 0.05) -> None:
        self.latency = latency
        self.busy = 0
        self.batches: list[list[bytes]] = []
        self.fail: Exception | None = None
        self.down = False

    def lanes(self) -> list[Lane]:
        return [] if self.down else [Lane("fake", 1, self.busy)]

    def reserve(self, lane: Lane) -> FakeSlot:
        self.busy += 1
        return FakeSlot(self)

    def unavailable(self) -> str:
        return "no healthy upstream."

    def on_change(self, callback: Callable[[], None]) -> None:
        pass


async def test_batches_respect_max_size_and_order() -> None:
    pool = FakePool()
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=8)
    batcher.start()
    items = [batcher.submit(str(i).encode(), 5) for i in range(20)]
    results = await asyncio.gather(*(item.future for item in items))
    assert [out for out, _ in results] == [str(i) for i in range(20)]
    assert all(len(b) <= 8 for b in pool.batches)
    await batcher.stop()


async def test_cancelled_items_are_dropped_and_cannot_kill_the_loop() -> None:
    pool = FakePool(latency=0.1)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=32)
    batcher.start()
    first = batcher.submit(b"first", 5)
    await asyncio.sleep(0.02)  # first is in flight, the slot is busy
    doomed = [batcher.submit(f"gone{i}".encode(), 5) for i in range(5)]
    kept = batcher.submit(b"kept", 5)
    for item in doomed:
        item.future.cancel()
    assert (await kept.future)[0] == "kept"
    await first.future
    assert [b"first"] in pool.batches
    assert [b"kept"] in pool.batches
    assert batcher._loop_alive()
    await batcher.stop()


async def test_queue_bound_and_upstream_errors() -> None:
    pool = FakePool(latency=0.2)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=2, max_queue=3)
    batcher.start()
    batcher.submit(b"a", 5)
    await asyncio.sleep(0.01)
    queued = [batcher.submit(b"x", 5) for _ in range(3)]
    with pytest.raises(QueueFullError):
        batcher.submit(b"overflow", 5)
    pool.fail = UpstreamError("boom.")
    for item in queued:
        with pytest.raises(UpstreamError, match="boom"):
            await item.future
    pool.fail = None
    pool.down = True
    lonely = batcher.submit(b"y", 5)
    with pytest.raises(NoUpstreamError):
        await lonely.future
    await batcher.stop()


async def test_wrong_reply_length_fails_the_batch() -> None:
    class ShortSlot(FakeSlot):
        async def send(self, payloads: Sequence[bytes], path: str = "") -> BatchReply:
            return BatchReply(outputs=[], model=None)

    class ShortPool(FakePool):
        def reserve(self, lane: Lane) -> FakeSlot:
            self.busy += 1
            return ShortSlot(self)

    batcher = Batcher(ShortPool(), EagerPolicy(1), max_batch_size=4)
    batcher.start()
    item = batcher.submit(b"1", 5)
    with pytest.raises(UpstreamError, match="0 outputs for 1 inputs"):
        await item.future
    await batcher.stop()


async def test_stop_flushes_queue_then_refuses() -> None:
    pool = FakePool(latency=0.05)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=4)
    batcher.start()
    items = [batcher.submit(str(i).encode(), 5) for i in range(10)]
    await batcher.stop(drain_timeout_s=5)
    assert all(item.future.done() and not item.future.exception() for item in items)
    with pytest.raises(ShuttingDownError):
        batcher.submit(b"late", 5)


async def test_expired_items_are_not_sent() -> None:
    pool = FakePool(latency=0.2)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=4)
    batcher.start()
    batcher.submit(b"busy", 5)
    await asyncio.sleep(0.01)
    expired = batcher.submit(b"expired", 0.05)
    with pytest.raises(Exception, match="timed out in the queue"):
        await expired.future
    await batcher.stop()
    assert [b"expired"] not in pool.batches


@pytest.mark.parametrize("policy", [AdaptivePolicy(32, 0.05), EagerPolicy(1)])
async def test_items_queued_behind_a_busy_upstream_leave_as_one_batch(policy) -> None:
    pool = FakePool(latency=0.1)
    batcher = Batcher(pool, policy, max_batch_size=32)
    batcher.start()
    first = batcher.submit(b"first", 5)
    await asyncio.sleep(0.01)
    rest = [batcher.submit(str(i).encode(), 5) for i in range(40)]
    await asyncio.gather(first.future, *(item.future for item in rest))
    await batcher.stop()
    assert [len(b) for b in pool.batches][-2:] == [32, 8]
    assert pool.batches[-2][0] == b"0"


class RecordingObserver:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def batch_sent(self, size: int, queue_waits: Sequence[float], fill_wait: float) -> None:
        self.log.append(f"sent {size}")

    def batch_done(self, seconds: float) -> None:
        self.log.append("done")


async def test_with_nobody_waiting_callers_are_answered_before_the_bookkeeping() -> None:
    log: list[str] = []
    batcher = Batcher(
        FakePool(latency=0.01), AdaptivePolicy(32, 0.05), observer=RecordingObserver(log)
    )
    batcher.start()
    items = [batcher.submit(b"x", 5) for _ in range(3)]
    for item in items:
        item.future.add_done_callback(lambda _: log.append("answered"))
    await asyncio.gather(*(item.future for item in items))
    await asyncio.sleep(0)  # the bookkeeping's turn
    await batcher.stop()
    assert log == ["sent 3", "answered", "answered", "answered", "done"]


async def test_with_items_waiting_the_next_batch_is_sent_before_callers_are_answered() -> None:
    pool = FakePool(latency=0.02)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=32)
    batcher.start()
    first = batcher.submit(b"first", 5)
    await asyncio.sleep(0.005)
    waiting = [batcher.submit(str(i).encode(), 5) for i in range(3)]  # one batch at a time
    sent_when_answered: list[int] = []
    first.future.add_done_callback(lambda _: sent_when_answered.append(len(pool.batches)))
    await asyncio.gather(first.future, *(item.future for item in waiting))
    await batcher.stop()
    assert pool.batches == [[b"first"], [b"0", b"1", b"2"]]
    assert sent_when_answered == [2]  # the waiting batch was upstream already


async def test_the_policy_learns_from_the_real_loop() -> None:
    policy = AdaptivePolicy(32, 0.05)
    pool = FakePool(latency=0.02)
    batcher = Batcher(pool, policy, max_batch_size=32)
    batcher.start()
    for _ in range(5):
        await asyncio.gather(*(batcher.submit(b"x", 5).future for _ in range(4)))
    await batcher.stop()
    estimates = policy.estimates(batcher.clock())
    assert estimates["batch_fixed_seconds"] + 4 * estimates["batch_seconds_per_item"] > 0.015
    assert estimates["arrival_rate_per_second"] > 0


async def test_requests_of_several_rows_fill_a_batch_by_rows() -> None:
    """A v2 request counts its rows against max_batch_size; a transport of its own sends."""

    async def rows_transport(slot: Slot, batch: list[Pending]) -> BatchReply:
        sizes = ",".join(str(item.size) for item in batch).encode()
        data, _ = await slot.exchange("/rows", sizes, {})
        return BatchReply(outputs=[data] * len(batch), model="m")

    pool = FakePool(latency=0.02)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=8, transport=rows_transport)
    batcher.start()
    try:
        items = [batcher.submit(f"r{i}", 5.0, size=3) for i in range(5)]
        answers = await asyncio.gather(*(item.future for item in items))
    finally:
        await batcher.stop()
    sent = [batch[1] for batch in pool.batches]
    assert all(sum(map(int, rows.split(b","))) <= 8 for rows in sent)  # 3+3, never 3+3+3
    assert sum(len(rows.split(b",")) for rows in sent) == 5
    assert all(model == "m" for _, model in answers)


class _Transport:
    """What `hung_up` reads of a connection's transport, over a real socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> socket.socket:
        assert name == "socket"
        return self.sock


class _Connection:
    """A request's connection state as the servers hand it over (slow_clients.CONNECTION),
    before the event loop has read its EOF: `disconnected` still False."""

    def __init__(self) -> None:
        self.ours, self.client = socket.socketpair()
        self.transport = _Transport(self.ours)
        self.disconnected = False

    def close(self) -> None:
        self.ours.close()
        self.client.close()


@pytest.fixture
def connections() -> Iterator[list[_Connection]]:
    made = [_Connection() for _ in range(8)]
    yield made
    for connection in made:
        connection.close()


def test_hung_up_asks_the_kernel(connections: list[_Connection]) -> None:
    stays, leaves, half, known = connections[:4]
    known.disconnected = True
    leaves.client.close()
    half.client.shutdown(socket.SHUT_WR)  # the request sent, then its side closed
    stays.client.sendall(b"pipelined bytes are not a hang-up")
    assert hung_up([stays, leaves, None, half, known]) == [False, True, False, True, True]


async def test_items_whose_clients_hung_up_are_dropped_and_the_batch_topped_up(
    connections: list[_Connection],
) -> None:
    """A storm's hang-ups are read over many loop turns; a batch taken meanwhile must not
    carry items whose clients are already gone (the kernel knows before the loop does)."""
    pool = FakePool(latency=0.1)
    batcher = Batcher(pool, EagerPolicy(1), max_batch_size=4)
    batcher.start()
    first = batcher.submit(b"first", 5)
    await asyncio.sleep(0.02)  # in flight: the rest queue behind it
    items = [
        batcher.submit(f"q{i}".encode(), 5, connection=c) for i, c in enumerate(connections[:7])
    ]
    for i in (0, 1, 2, 4):
        connections[i].client.close()  # hung up; no event loop has read it
    answers = await asyncio.gather(first.future, items[3].future, items[5].future, items[6].future)
    await batcher.stop()
    assert [out for out, _ in answers] == ["first", "q3", "q5", "q6"]
    assert pool.batches == [[b"first"], [b"q3", b"q5", b"q6"]]
    assert all(items[i].future.cancelled() for i in (0, 1, 2, 4))
