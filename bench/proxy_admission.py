"""API keys and rate limits at the proxy: what they cost, and whether a limit holds.

    python bench/proxy_admission.py [--duration 5]

1. The limiter's cost per request, in process: a known key (the common case), a new key
   (hashed once, then remembered), and the header parsing.
2. Proxy throughput at 256 closed-loop wrk clients against the simulated 20 ms model,
   without keys and with `--api-keys` (a key whose rate never binds), beside the ideal
   (1,600 items/s). Target: keys on, still at least 0.93 of the ideal.
3. A key limited to 50 requests/s driven at 200 requests/s for 10 s, beside a second key
   at 40 requests/s: admitted per second for each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_proxy.admission import Admission, presented_key
from bench._common import save, table, wrk
from bench.proxy_batching import ITEM, _proxy, _sim
from nexus_common.keyfiles import add_key
from tests.harness.servers import free_port, run_process
from tests.harness.simulation import MODELS


def limiter_cost(keys: Path, key: str) -> dict[str, float]:
    gate = Admission(keys)
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]
    now = [0.0]

    def known() -> None:
        now[0] += 1e-6
        gate.admit(presented_key(headers), now[0])

    runs = 200_000
    per_known = min(timeit.repeat(known, number=runs, repeat=5)) / runs
    per_header = min(timeit.repeat(lambda: presented_key(headers), number=runs, repeat=5)) / runs
    fresh = [f"nxk_unknown_{i}" for i in range(runs)]
    started = time.perf_counter()
    for candidate in fresh[:4000]:
        gate.admit(candidate, 0.0)
    per_new = (time.perf_counter() - started) / 4000
    return {
        "known_key_us": per_known * 1e6,
        "header_us": per_header * 1e6,
        "new_key_us": per_new * 1e6,
    }


async def drive(url: str, key: str, rate: float, seconds: float) -> list[tuple[float, int]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:

        async def one() -> tuple[float, int]:
            async with client.post(
                url, data=ITEM, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                await resp.read()
                return time.monotonic(), resp.status

        start = time.monotonic()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        return [await t for t in tasks]


def per_second(results: list[tuple[float, int]]) -> list[int]:
    start = min(t for t, _ in results)
    seconds: dict[int, int] = {}
    for moment, status in results:
        if status == 200:
            seconds[int(moment - start)] = seconds.get(int(moment - start), 0) + 1
    return [seconds.get(i, 0) for i in range(max(seconds) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk row")
    args = parser.parse_args()
    model = MODELS["20ms"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.json"
        open_key = add_key(keys, "bench", rate=1e9, burst=1e9)
        limited = add_key(keys, "limited", rate=50, burst=5)
        steady = add_key(keys, "steady", rate=50, burst=5)
        results["cost"] = limiter_cost(keys, open_key)
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        with run_process(_sim(model, sim_port), sim_url + "/health"):
            for label, extra, headers in (
                ("no keys", (), None),
                ("--api-keys", ("--api-keys", str(keys)), {"Authorization": f"Bearer {open_key}"}),
            ):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                with run_process(_proxy(port, sim_url, "adaptive", *extra), url + "/ready"):
                    row = wrk(url + "/predict", ITEM, 256, args.duration, headers)
                    results[label] = {**row, "ideal": model.ideal(256)}
                    if extra:
                        flood, calm = asyncio.run(_both(url + "/predict", limited, steady))
                        results["limited_per_second"] = per_second(flood)
                        results["steady_per_second"] = per_second(calm)
                        results["limited_429"] = sum(1 for _, s in flood if s == 429)
    cost = results["cost"]
    rows = [
        [
            label,
            f"{results[label]['rps']:.0f}",
            f"{results[label]['ideal']:.0f}",
            f"{results[label]['rps'] / results[label]['ideal']:.2f}",
            f"{results[label]['p50_ms']:.1f}",
        ]
        for label in ("no keys", "--api-keys")
    ]
    print(table(["256 clients, 20 ms model", "items/s", "ideal", "of ideal", "p50 ms"], rows))
    print(
        f"\nlimiter per request: known key {cost['known_key_us']:.2f} us "
        f"(of which header parsing {cost['header_us']:.2f} us), "
        f"a key seen for the first time {cost['new_key_us']:.2f} us"
    )
    print(f"50/s key at 200/s, admitted per second: {results['limited_per_second']}")
    print(f"40/s key beside it (limit 50/s), admitted per second: {results['steady_per_second']}")
    print(save("proxy_admission", results))


async def _both(
    url: str, limited: str, steady: str
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    return await asyncio.gather(drive(url, limited, 200, 10), drive(url, steady, 40, 10))


if __name__ == "__main__":
    main()
