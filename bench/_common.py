"""Small helpers shared by the benchmarks: timing, tables, JSON results."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).parent / "results"


def best_of(
    runs: int,
    fn: Callable[[int], object],
    *,
    settle: bool = True,
    before: Callable[[], object] | None = None,
) -> float:
    """Fastest wall time of `runs` calls of fn(i), in seconds; `before` runs untimed first.

    With `settle`, dirty pages are flushed (untimed) before each run, so one run's
    writeback does not throttle the next: on these VMs that noise exceeds 2x.
    """
    times = []
    for i in range(runs):
        if before is not None:
            before()
        if settle:
            os.sync()
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return min(times)


async def closed_loop(
    url: str, body: bytes, headers: dict[str, str], clients: int, seconds: float
) -> dict[str, float]:
    """`clients` callers POSTing `body` back to back for `seconds`: requests/s, p50, p99."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    errors += 1
                    continue
            latencies.append(time.perf_counter() - started)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return figures_of(latencies, elapsed, errors)


def figures_of(latencies: list[float], elapsed: float, errors: int) -> dict[str, float]:
    """A closed loop's requests/s, p50 and p99 (ms) and failures."""
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3 if latencies else 0.0,
        "errors": float(errors),
    }


def wrk(
    url: str, body: str, connections: int, duration: float, headers: dict[str, str] | None = None
) -> dict[str, float]:
    """`connections` closed-loop wrk clients POSTing `body` (C: the callers' own turnaround
    costs next to nothing): requests/s, p50, p99, non-2xx answers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [[{body}]]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
        )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", "--latency"]
    out = subprocess.run(
        [*command, "--timeout", "30s", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Aligned columns; a row shorter than the headers is blank to the right."""
    cells = [[str(c) for c in row] + [""] * (len(headers) - len(row)) for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    data = {"machine": {"cpus": _cpus(), "python": platform.python_version()}, **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _cpus() -> int:
    return len(os.sched_getaffinity(0))
