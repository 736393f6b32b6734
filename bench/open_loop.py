"""Open-loop load: Poisson arrivals at a set rate, each timed from when it was due.

    python -m bench.open_loop --url http://127.0.0.1:8080/predict --rate 800 --duration 5

Closed-loop tools (wrk) send the next request only after an answer, so a slow
server slows the load down and hides its own queueing. Here arrivals follow a
seeded exponential schedule whatever the answers, and each latency counts from
the arrival's due time, so time spent behind the generator counts too (no
coordinated omission). Bounded: `rate * duration` requests at most, loopback
only, and whatever has not answered `grace_s` after the last arrival is counted
as an error. Requests go over keep-alive HTTP/1.1 connections written by hand
(an idle one is reused, a new one opened when none is idle), so the generator
costs a few microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OpenLoopResult", "open_loop"]


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float  # offered, per second
    sent: int
    answered: int
    errors: int
    p50_ms: float
    p99_ms: float
    achieved: float  # answered per second of the schedule

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time; reads Content-Length bodies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self._buffer) < end + 4 + length:
            return
        status = int(lines[0].split()[1])
        del self._buffer[: end + 4 + length]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter


async def open_loop(
    url: str,
    body: bytes,
    rate: float,
    duration_s: float,
    *,
    seed: int = 1,
    warm_connections: int = 64,
    grace_s: float = 10.0,
) -> OpenLoopResult:
    """Offer `rate` requests per second for `duration_s` (POST `body` to `url`)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the open-loop generator talks to loopback addresses only.")
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    rng = random.Random(seed)
    due: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        due.append(t)
        t += rng.expovariate(rate)

    loop = asyncio.get_running_loop()

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(_Connection, host, port)
        return protocol

    idle = [await connect() for _ in range(warm_connections)]
    latencies: list[float] = []
    errors = 0

    async def one(at: float) -> None:
        nonlocal errors
        connection = idle.pop() if idle else await connect()
        try:
            status = await connection.request(request)
        except ConnectionError:
            errors += 1
            return
        latencies.append(time.perf_counter() - at)
        if status != 200:
            errors += 1
        if not connection.closed:
            idle.append(connection)

    start = time.perf_counter()
    tasks = []
    for offset in due:
        at = start + offset
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(at)))
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        errors += len(late)
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    ordered = sorted(latencies)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    return OpenLoopResult(
        rate=rate,
        sent=len(due),
        answered=len(latencies),
        errors=errors,
        p50_ms=statistics.median(ordered) * 1000 if ordered else 0.0,
        p99_ms=quantile(0.99),
        achieved=len(latencies) / duration_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Poisson open-loop load over HTTP/1.1")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--body", default='{"input": [0.1, 0.2, 0.3, 0.4]}')
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(
        open_loop(args.url, args.body.encode(), args.rate, args.duration, seed=args.seed)
    )
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
