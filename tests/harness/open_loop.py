"""Open-loop load: arrivals at a set rate, each timed from when it was due.

    python -m tests.harness.open_loop --url http://127.0.0.1:8080/predict --rate 800 --duration 5
    python -m tests.harness.open_loop --url ... --rate 200 --arrivals uniform
        --answers answers.jsonl

Closed-loop tools (wrk) send the next request only after an answer, so a slow
server slows the load down and hides its own queueing. Here arrivals follow a
schedule fixed in advance (seeded Poisson, or evenly spaced) whatever the
answers, and each latency counts from the arrival's due time, so time spent
behind the generator counts too (no coordinated omission). Bounded: `rate *
duration` requests at most, loopback only, and whatever has not answered
`grace_s` after the last arrival is counted as an error. Requests go over
keep-alive HTTP/1.1 connections written by hand (an idle one is reused, a new
one opened when none is idle), so the generator costs a few microseconds per
request; run it as its own process (`--answers` writes every answer) when the
caller's own work must not delay the arrivals, as a test under coverage would.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["Answer", "Connection", "OpenLoopResult", "open_loop", "schedule", "send"]

Arrivals = Literal["poisson", "uniform"]


@dataclass(frozen=True)
class Answer:
    due: float  # time.monotonic() when it was due: one clock for every process on the host
    latency: float  # seconds from `due` to the whole answer
    status: int  # 0: the connection failed, or no answer within the grace time
    body: bytes


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


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time; reads Content-Length bodies.

    `headers` are the last answer's, names in lower case."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.heard = False  # any byte of the current request's answer
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.heard = True
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", 0))
        if len(self._buffer) < end + 4 + length:
            return
        status = int(lines[0].split()[1])
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        self.headers = headers
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.heard = False
        self.transport.write(data)
        return await self._waiter


def schedule(
    rate: float, duration_s: float, arrivals: Arrivals = "poisson", seed: int = 1
) -> list[float]:
    """Due offsets in seconds from the start: seeded exponential gaps, or even ones."""
    if arrivals == "uniform":
        return [i / rate for i in range(int(rate * duration_s))]
    rng = random.Random(seed)
    due: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        due.append(t)
        t += rng.expovariate(rate)
    return due


async def send(
    url: str,
    body: bytes,
    due: list[float],
    *,
    warm_connections: int = 64,
    grace_s: float = 10.0,
) -> list[Answer]:
    """POST `body` to `url` at each due offset; every request's answer, in due order."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the open-loop generator talks to loopback addresses only.")
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()

    async def connect() -> Connection:
        _, protocol = await loop.create_connection(Connection, host, port)
        return protocol

    idle = [await connect() for _ in range(warm_connections)]

    def reusable() -> Connection | None:
        while idle:  # the most recently used first: the server closes long-idle ones
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def one(at: float) -> Answer:
        connection = reusable()
        try:  # a refused connection (the server stopped) is an answer of status 0 too
            if connection is not None:
                try:
                    status, answer = await connection.request(request)
                except ConnectionError:
                    if connection.heard:
                        raise
                    # The server closed this idle keep-alive connection as we wrote: it
                    # never saw the request, so it goes again on a new one, as browsers do.
                    connection = None
            if connection is None:
                connection = await connect()
                status, answer = await connection.request(request)
        except ConnectionError:
            return Answer(at, time.monotonic() - at, 0, b"")
        if not connection.closed:
            idle.append(connection)
        return Answer(at, time.monotonic() - at, status, answer)

    # A collection of the answers piling up here would stall the arrivals for tens of
    # milliseconds, and each latency counts from its due time: the generator's pause would
    # be reported as the server's. Nothing this loop makes needs the cycle collector.
    collecting = gc.isenabled()
    gc.disable()
    start = time.monotonic()
    tasks = []
    for offset in due:
        at = start + offset
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(at)))
    if tasks:
        await asyncio.wait(tasks, timeout=grace_s)
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    if collecting:
        gc.enable()
    answers = []
    for offset, task in zip(due, tasks, strict=True):
        if task.done() and not task.cancelled():
            answers.append(task.result())
        else:
            task.cancel()
            answers.append(Answer(start + offset, grace_s, 0, b""))
    return answers


async def open_loop(
    url: str,
    body: bytes,
    rate: float,
    duration_s: float,
    *,
    seed: int = 1,
    arrivals: Arrivals = "poisson",
    warm_connections: int = 64,
    grace_s: float = 10.0,
) -> OpenLoopResult:
    """Offer `rate` requests per second for `duration_s` (POST `body` to `url`)."""
    due = schedule(rate, duration_s, arrivals, seed)
    answers = await send(url, body, due, warm_connections=warm_connections, grace_s=grace_s)
    return summarise(answers, rate, duration_s)


def summarise(answers: list[Answer], rate: float, duration_s: float) -> OpenLoopResult:
    ordered = sorted(a.latency for a in answers if a.status)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

    return OpenLoopResult(
        rate=rate,
        sent=len(answers),
        answered=len(ordered),
        errors=sum(1 for a in answers if a.status != 200),
        p50_ms=statistics.median(ordered) * 1000 if ordered else 0.0,
        p99_ms=quantile(0.99),
        achieved=len(ordered) / duration_s,
    )


def write_answers(answers: list[Answer], path: Path) -> None:
    """One JSON object a line: due (monotonic), latency (s), status, body (text)."""
    with path.open("w") as out:
        for a in answers:
            record = {"due": a.due, "latency": a.latency, "status": a.status}
            out.write(json.dumps({**record, "body": a.body.decode(errors="replace")}) + "\n")


def read_answers(path: Path) -> list[Answer]:
    return [
        Answer(r["due"], r["latency"], r["status"], r["body"].encode())
        for r in map(json.loads, path.read_text().splitlines())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="Open-loop load over HTTP/1.1")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--body", default='{"input": [0.1, 0.2, 0.3, 0.4]}')
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    parser.add_argument("--answers", type=Path, help="write every answer here (JSON lines)")
    args = parser.parse_args()
    import uvloop

    due = schedule(args.rate, args.duration, args.arrivals, args.seed)
    answers = uvloop.run(send(args.url, args.body.encode(), due))
    if args.answers:
        write_answers(answers, args.answers)
    print(json.dumps(summarise(answers, args.rate, args.duration).as_dict()))


if __name__ == "__main__":
    main()
