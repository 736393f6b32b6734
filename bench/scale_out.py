"""Throughput as model-server replicas are added behind one proxy, and the proxy's ceiling.

    python bench/scale_out.py [--duration 10] [--replicas 1,2,4]

Part 1: N = 1, 2, 4 real `nexus-model-server` processes serve one stored version
whose handler sleeps 200 ms per batch (tests/harness/faults.py), so one
replica does at most 32 / 0.2 = 160 items/s. One `nexus-proxy` fronts them
(`--upstream` each). wrk, closed loop, 96 connections per replica (enough to
keep every replica's two batches in flight full, and a queue besides), so the
replicas are the bottleneck. Printed: items/s for each N, and its ratio to
N x the N=1 figure (target: at least 0.9 at N = 4).

Part 2: the proxy's own ceiling: items/s through it with fast upstreams (two
simulated models answering a batch in 1 ms, four at a time), as a ratio to a bare
ASGI echo server (uvicorn, uvloop, httptools: the same stack, no work) under the
same wrk load. Both share this machine's cores with wrk itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_proxy.autoscaling import replicas_for_rate
from bench._common import save, table, wrk
from bench.proxy_batching import ITEM
from tests.harness.faults import HANDLER, store_version
from tests.harness.repos import git_repo
from tests.harness.servers import free_port, run_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BATCH_MS = 200
PER_REPLICA = 32 / (BATCH_MS / 1000)  # items/s one replica can do
CLIENTS_PER_REPLICA = 96
RATES = (100, 500, 1_000, 2_500, 5_000, 10_000)  # items/s, for the sizing table

ECHO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"output": ' + body + b'}'})
"""


@contextlib.contextmanager
def model_servers(repo: Path, cache: Path, n: int) -> Iterator[list[str]]:
    env = dict(os.environ, NEXUS_HANDLER=HANDLER, PYTHONPATH=str(ROOT))
    env.update(NEXUS_MODEL_NAME="svc", NEXUS_CACHE_DIR=str(cache))
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(n)]
    with contextlib.ExitStack() as stack:
        for url in urls:
            port = url.rsplit(":", 1)[1]
            command = [str(BIN / "nexus-model-server"), "--port", port, "--repo", str(repo)]
            stack.enter_context(run_process(command, url + "/ready", env=env))
        yield urls


@contextlib.contextmanager
def proxy_over(urls: list[str]) -> Iterator[str]:
    port = free_port()
    command = [str(BIN / "nexus-proxy"), "--port", str(port), "--log-level", "warning"]
    for url in urls:
        command += ["--upstream", url]
    with run_process(command, f"http://127.0.0.1:{port}/ready"):
        yield f"http://127.0.0.1:{port}"


def scaling(work: Path, replicas: list[int], duration: float) -> dict[str, Any]:
    repo = git_repo(work / "repo")
    store_version(repo, name="v1", batch_ms=BATCH_MS)
    rows: dict[str, Any] = {}
    for n in replicas:
        with model_servers(repo, work / "cache", n) as urls, proxy_over(urls) as proxy:
            wrk(proxy + "/predict", ITEM, CLIENTS_PER_REPLICA * n, 2)  # warm-up
            run = wrk(proxy + "/predict", ITEM, CLIENTS_PER_REPLICA * n, duration)
        rows[str(n)] = {**run, "ideal": n * PER_REPLICA}
    base = rows[str(replicas[0])]["rps"] / replicas[0]
    for n in replicas:
        rows[str(n)]["ratio_to_n_times_one"] = rows[str(n)]["rps"] / (n * base)
    return rows


def ceiling(work: Path, duration: float, clients: int = 256) -> dict[str, Any]:
    (work / "echo_app.py").write_text(ECHO_APP)
    echo_port = free_port()
    echo = [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(echo_port)]
    echo += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    with run_process(echo, f"http://127.0.0.1:{echo_port}/", cwd=work):
        wrk(f"http://127.0.0.1:{echo_port}/", ITEM, clients, 2)
        bare = wrk(f"http://127.0.0.1:{echo_port}/", ITEM, clients, duration)
    sims = []
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            port = free_port()
            command = [sys.executable, "-m", "tests.harness.sim_model", "--port", str(port)]
            command += ["--latency-ms", "1", "--concurrency", "4"]
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(run_process(command, url + "/health", cwd=ROOT))
            sims.append(url)
        with proxy_over(sims) as proxy:
            wrk(proxy + "/predict", ITEM, clients, 2)
            through = wrk(proxy + "/predict", ITEM, clients, duration)
    return {"echo": bare, "proxy": through, "ratio": through["rps"] / bare["rps"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--replicas", default="1,2,4")
    args = parser.parse_args()
    replicas = [int(n) for n in args.replicas.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = scaling(Path(tmp), replicas, args.duration)
        top = ceiling(Path(tmp), args.duration)
    print(
        table(
            ["replicas", "clients", "items/s", "ideal", "vs N x N=1", "p50 ms", "p99 ms"],
            [
                [
                    n,
                    CLIENTS_PER_REPLICA * int(n),
                    round(row["rps"]),
                    round(row["ideal"]),
                    f"{row['ratio_to_n_times_one']:.2f}",
                    row["p50_ms"],
                    row["p99_ms"],
                ]
                for n, row in rows.items()
            ],
        )
    )
    print(
        f"\nhandler: {BATCH_MS} ms a batch (ideal {PER_REPLICA:.0f} items/s a replica); wrk -t1, "
        f"{args.duration:.0f} s a row, after a 2 s warm-up\n"
    )
    print(
        table(
            ["", "req/s", "p50 ms", "p99 ms"],
            [
                [
                    "bare ASGI echo (uvicorn)",
                    round(top["echo"]["rps"]),
                    top["echo"]["p50_ms"],
                    top["echo"]["p99_ms"],
                ],
                [
                    "proxy, fast upstreams",
                    round(top["proxy"]["rps"]),
                    top["proxy"]["p50_ms"],
                    top["proxy"]["p99_ms"],
                ],
            ],
        )
    )
    print(f"\nproxy ceiling: {top['ratio']:.2f} of the bare echo server, 256 connections\n")
    per_replica = rows[str(replicas[0])]["rps"] / replicas[0]
    plan = sizing(per_replica, top["proxy"]["rps"])
    print(table(["items/s", "model servers (80% busy)", "proxies (70% CPU)"], plan))
    print(f"\nfrom {per_replica:.0f} items/s a replica and {top['proxy']['rps']:.0f} a proxy")
    save("scale_out", {"replicas": rows, "ceiling": top, "sizing": plan})


def sizing(per_replica: float, per_proxy: float) -> list[list[int]]:
    """Replicas each request rate needs, from the measured figures (docs/scaling.md)."""
    return [
        [rate, replicas_for_rate(rate, per_replica, 0.8), replicas_for_rate(rate, per_proxy, 0.7)]
        for rate in RATES
    ]


if __name__ == "__main__":
    main()
