"""A soak: the proxy and a model server at about 70% of saturation for minutes on end.

    python bench/soak.py [--minutes 10] [--load 0.7]

A model server (a TorchScript MLP, CPU) and the proxy run as real processes. First the
stack's saturation is found by a ramp (open loop, 250/s more every 5 s, until a step has
errors or a p99 over 250 ms); then tests/harness/open_loop.py offers --load of that, Poisson,
one minute at a time.
Printed per minute: requests, errors, p50 and p99, and each server's resident memory and
open file descriptors. Targets (docs/reliability.md): memory growth under 5% from
minute 2 to the end, descriptors within +-10, p99 drift under 10% (minute 2 against the
last). Results in bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from bench.rollout import make_version, rss_mb, start_stack
from control_plane import Registry
from nexus_common.runner import raise_open_files_limit
from tests.harness.open_loop import schedule, send, summarise
from tests.harness.repos import git_repo


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def soak(work: Path, minutes: int, load: float) -> dict[str, Any]:
    repo = git_repo(work / "repo")
    v1 = make_version(repo, 1, 256)
    Registry(repo).promote(v1.short_hash, "bench", "production")
    server, proxy, _, proxy_url = start_stack(repo, work / "cache")
    url, body = proxy_url + "/predict", json.dumps({"input": [0.1] * 64}).encode()
    rows: list[dict[str, Any]] = []
    latencies: list[list[float]] = []  # each minute's answered requests
    try:
        capacity = await saturation(url, body)
        rate = round(capacity * load)
        print(f"saturation {capacity:.0f} items/s; soaking at {rate}/s ({load:.0%})", flush=True)
        for minute in range(1, minutes + 1):
            answers = await send(url, body, schedule(rate, 60, seed=minute))
            result = summarise(answers, rate, 60)
            latencies.append([a.latency for a in answers if a.status == 200])
            refused = Counter(a.status for a in answers if a.status != 200)
            await asyncio.sleep(2)  # the generator's connections closed: what stays is held
            row = {
                "minute": minute,
                "requests": result.sent,
                "errors": result.errors,
                "error_statuses": dict(refused),
                "p50_ms": round(result.p50_ms, 1),
                "p99_ms": round(result.p99_ms, 1),
                "proxy_rss_mb": round(rss_mb(proxy.pid), 1),
                "server_rss_mb": round(rss_mb(server.pid), 1),
                "proxy_fds": open_files(proxy.pid),
                "server_fds": open_files(server.pid),
            }
            rows.append(row)
            print(table(list(row), [list(row.values())]).splitlines()[-1], flush=True)
    finally:
        for proc in (proxy, server):
            proc.terminate()
            proc.wait(30)
    return {
        "saturation_items_s": round(capacity),
        "rate": rate,
        "load": load,
        "minutes": rows,
        "verdict": verdict(rows, latencies),
    }


async def saturation(url: str, body: bytes, step: int = 250, seconds: float = 5) -> float:
    """The highest rate (in steps of `step`/s, `seconds` each) the stack answers in full
    with a p99 under 250 ms: its saturation, as an open-loop caller sees it."""
    rate, best = step, 0.0
    while True:
        result = summarise(await send(url, body, schedule(rate, seconds, seed=rate)), rate, seconds)
        print(f"  probe {rate}/s: p99 {result.p99_ms:.0f} ms, {result.errors} errors", flush=True)
        if result.errors or result.p99_ms > 250:
            return best
        best = float(rate)
        rate += step


def verdict(rows: list[dict[str, Any]], latencies: list[list[float]]) -> dict[str, Any]:
    """The targets, from minute 2 (the first is warm-up) to the last. The p99 drift is also
    given pooled: the p99 of all the second half's requests against the first half's (from
    minute 2), which one slow minute moves less."""
    if len(rows) < 3:
        return {"note": "too short to judge: run at least 3 minutes"}
    first, last = rows[1], rows[-1]
    middle = 1 + (len(rows) - 1) // 2
    early = sorted(x for minute in latencies[1:middle] for x in minute)
    late = sorted(x for minute in latencies[middle:] for x in minute)

    def p99(values: list[float]) -> float:
        return values[int(0.99 * (len(values) - 1))] * 1000

    def growth(key: str) -> float:
        return round((last[key] - first[key]) / first[key] * 100, 2)

    return {
        "proxy_memory_growth_pct": growth("proxy_rss_mb"),
        "server_memory_growth_pct": growth("server_rss_mb"),
        "proxy_fd_change": last["proxy_fds"] - first["proxy_fds"],
        "server_fd_change": last["server_fds"] - first["server_fds"],
        "p99_drift_pct": growth("p99_ms"),
        "p99_first_half_ms": round(p99(early), 1),
        "p99_second_half_ms": round(p99(late), 1),
        "p99_pooled_drift_pct": round((p99(late) - p99(early)) / p99(early) * 100, 2),
        "errors": sum(r["errors"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--load", type=float, default=0.7, help="share of saturation offered")
    args = parser.parse_args()
    raise_open_files_limit()
    with tempfile.TemporaryDirectory() as tmp:
        data = asyncio.run(soak(Path(tmp), args.minutes, args.load))
    rows = data["minutes"]
    print(table(list(rows[0]), [list(r.values()) for r in rows]))
    print(json.dumps(data["verdict"], indent=2))
    print(f"saved {save('soak', data)}")


if __name__ == "__main__":
    main()
