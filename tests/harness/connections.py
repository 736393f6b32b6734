"""Many client connections held on one proxy, a request on each at once (the test and
bench/many_connections.py)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.harness.open_loop import Connection
from tests.harness.servers import free_port, run_process

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
LOW_SOFT_LIMIT = 1024


@dataclass(frozen=True)
class Held:
    connections: int
    rss_before_mb: float
    rss_held_mb: float
    kib_per_connection: float
    statuses: dict[int, int]
    refused_without_retry_after: int
    failed_connections: int
    seconds_to_answer_all: float
    soft_limit: int
    health_after: int


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))


@contextlib.contextmanager
def proxy_and_model() -> Iterator[tuple[str, int]]:
    """The simulated model and the proxy in front of it: (proxy URL, proxy pid)."""
    model_port, proxy_port = free_port(), free_port()
    model = [sys.executable, "-m", "tests.harness.sim_model", "--port", str(model_port)]
    proxy = [str(BIN / "nexus-proxy"), "--port", str(proxy_port)]
    proxy += ["--upstream", f"http://127.0.0.1:{model_port}", "--log-level", "warning"]
    model_url, proxy_url = f"http://127.0.0.1:{model_port}", f"http://127.0.0.1:{proxy_port}"
    with (
        run_process([*model, "--latency-ms", "20"], model_url + "/health", cwd=ROOT),
        run_process(proxy, proxy_url + "/ready", preexec_fn=_low_soft_limit) as process,
    ):
        yield proxy_url, process.pid


def raise_own_limit(connections: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 256 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def hold(url: str, pid: int, connections: int) -> Held:
    """Open `connections` to the proxy, then POST /predict on each of them at once."""
    raise_own_limit(connections)
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    before = rss_mb(pid)
    held: list[Connection] = []
    for start in range(0, connections, 500):  # in steps: the listen backlog is bounded too
        opened = await asyncio.gather(
            *(
                loop.create_connection(Connection, host, int(port))
                for _ in range(min(500, connections - start))
            )
        )
        held += [protocol for _, protocol in opened]
    await asyncio.sleep(0.5)
    with_them = rss_mb(pid)
    body = b'{"input": [0.1, 0.2, 0.3, 0.4]}'
    request = (
        f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    began = time.monotonic()
    replies = await asyncio.gather(
        *(asyncio.wait_for(c.request(request), 60) for c in held), return_exceptions=True
    )
    took = time.monotonic() - began
    statuses: Counter[int] = Counter()
    failed = without_retry_after = 0
    for connection, reply in zip(held, replies, strict=True):
        if isinstance(reply, BaseException):
            failed += 1
            continue
        statuses[reply[0]] += 1
        if reply[0] in (429, 503) and b"retry-after" not in connection.headers:
            without_retry_after += 1
    for connection in held:
        if connection.transport is not None:
            connection.transport.close()
    health = httpx.get(url + "/health", timeout=10).status_code
    return Held(
        connections=len(held),
        rss_before_mb=round(before, 1),
        rss_held_mb=round(with_them, 1),
        kib_per_connection=round((with_them - before) * 1024 / max(1, len(held)), 2),
        statuses=dict(sorted(statuses.items())),
        refused_without_retry_after=without_retry_after,
        failed_connections=failed,
        seconds_to_answer_all=round(took, 2),
        soft_limit=soft_open_files(pid),
        health_after=health,
    )
