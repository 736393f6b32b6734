"""Upstreams dying under the proxy, as real processes: one killed with batches in flight,
then all of them, then all back. The proxy is never restarted."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import httpx

from tests.harness.servers import free_port
from tests.reliability.stack import proxy, simulated_model


async def _burst(base: str, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one(i: int) -> int:
            reply = await client.post("/predict", json={"i": i})
            return reply.status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _wait_ready(base: str, want: int, timeout_s: float = 15) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/ready", timeout=2).status_code == want:
                return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"/ready never answered {want}")


async def test_upstreams_killed_mid_batch_then_all_down_then_back() -> None:
    port_a, port_b = free_port(), free_port()
    flags = ("--latency-ms", "300")
    with (
        simulated_model(*flags, port=port_a) as (a, sim_a),
        simulated_model(*flags, port=port_b) as (b, sim_b),
        contextlib.ExitStack() as restarted,
        proxy(a, b, flags=("--request-timeout-s", "10")) as front,
    ):
        assert set(await _burst(front, 32)) == {200}
        # kill -9 of A while both upstreams hold batches
        burst = asyncio.get_running_loop().create_task(_burst(front, 128))
        await asyncio.sleep(0.15)
        sim_a.send_signal(signal.SIGKILL)
        statuses = await burst
        assert set(statuses) <= {200, 502}
        assert statuses.count(502) <= 2 * 32  # only A's in-flight batches (2 a slot)
        assert statuses.count(200) >= 64
        # A is dropped from the rotation: every later request is answered by B
        assert set(await _burst(front, 64)) == {200}
        # then B too: fast refusals, never a hang, and /ready says so
        sim_b.send_signal(signal.SIGKILL)
        _wait_ready(front, 503)
        started = time.monotonic()
        statuses = await _burst(front, 16)
        assert set(statuses) <= {502, 503}
        assert time.monotonic() - started < 5  # far below the 10 s request timeout
        # both back on their ports: the same proxy serves again
        restarted.enter_context(simulated_model(*flags, port=port_a))
        restarted.enter_context(simulated_model(*flags, port=port_b))
        _wait_ready(front, 200)
        assert set(await _burst(front, 64)) == {200}
