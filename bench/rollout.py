"""A rollout under load, and the memory of twenty rollouts in a row.

    python bench/rollout.py [--rate 200] [--seconds 15] [--cycles 20]

Part 1: a model server (following `production`, canary 10% / 200 items / 10 s,
the defaults) and the proxy run as real processes on a TorchScript MLP. Clients
send --rate requests/s open-loop (tests/harness/open_loop.py) through the proxy; after a third of
the run, v2 is promoted to production in the metadata. Printed: p50/p99
before the change and during the rollout, the time from the metadata change
to all traffic on v2 (the `promoted` event), and requests lost (non-200).

Part 2: two 16 MB TorchScript models are promoted in turn --cycles times
(canary 0%: the swap itself); the server's resident memory after the second
rollout and after the last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from control_plane import ModelEntry, Registry
from tests.harness.open_loop import schedule, send
from tests.harness.repos import git_repo
from tests.harness.servers import free_port

BIN = Path(sys.executable).parent


def make_version(repo: Path, seed: int, width: int) -> ModelEntry:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
    ).eval()
    path = repo.parent / f"v{seed}.pt"
    torch.jit.script(model).save(str(path))
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", f"v{seed}"], cwd=repo, check=True)
    return Registry(repo).store(path, "bench").entry


def start(args: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(ready, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{args[0]} did not become ready")


def start_stack(
    repo: Path, cache: Path
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str, str]:
    """A model server following `bench`'s production in `repo`, and the proxy before it:
    (server, proxy, the server's URL, the proxy's URL)."""
    model_port, proxy_port = free_port(), free_port()
    model_url, proxy_url = f"http://127.0.0.1:{model_port}", f"http://127.0.0.1:{proxy_port}"
    server = start(
        [str(BIN / "nexus-model-server"), "--port", str(model_port), "--repo", str(repo)],
        server_env(repo, cache),
        model_url + "/ready",
    )
    proxy = start(
        [str(BIN / "nexus-proxy"), "--port", str(proxy_port), "--upstream", model_url],
        dict(os.environ),
        proxy_url + "/ready",
    )
    return server, proxy, model_url, proxy_url


def server_env(repo: Path, cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, NEXUS_MODEL_NAME="bench", NEXUS_MODEL_REF="production")
    env.update(NEXUS_CACHE_DIR=str(cache), NEXUS_POLL_INTERVAL_S="0.5", NEXUS_DEVICE="cpu")
    env.update(extra)
    return env


def events(model_url: str) -> list[dict[str, Any]]:
    return list(httpx.get(model_url + "/deployment", timeout=10).json()["events"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-int(q * 100) * len(ordered) // 10000) - 1)] if ordered else 0.0


async def rollout_under_load(work: Path, rate: float, seconds: float) -> dict[str, Any]:
    repo = git_repo(work / "repo")
    v1, v2 = make_version(repo, 1, 256), make_version(repo, 2, 256)
    Registry(repo).promote(v1.short_hash, "bench", "production")
    server, proxy, model_url, proxy_url = start_stack(repo, work / "cache")
    try:
        body = json.dumps({"input": [0.1] * 64}).encode()
        due = schedule(rate, seconds, "uniform")
        load = asyncio.get_running_loop().create_task(send(proxy_url + "/predict", body, due))
        await asyncio.sleep(seconds / 3)
        changed = time.monotonic()
        await asyncio.to_thread(Registry(repo).promote, v2.short_hash, "bench", "production")
        answers = await load
        done = [e for e in events(model_url) if e["event"] in ("promoted", "rolled_back")]
    finally:
        for proc in (proxy, server):
            proc.terminate()
            proc.wait(30)
    if not done or done[-1]["event"] != "promoted":
        raise SystemExit(f"the rollout did not complete within the run: {done}")
    finished = time.monotonic() - (time.time() - float(done[-1]["unix"]))
    steady = [a.latency for a in answers if a.due < changed]
    during = [a.latency for a in answers if changed <= a.due <= finished]
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": len(answers),
        "steady_p50_ms": round(percentile(steady, 50) * 1000, 2),
        "steady_p99_ms": round(percentile(steady, 99) * 1000, 2),
        "rollout_p50_ms": round(percentile(during, 50) * 1000, 2),
        "rollout_p99_ms": round(percentile(during, 99) * 1000, 2),
        "change_to_all_on_v2_s": round(finished - changed, 2),
        "lost": sum(1 for a in answers if a.status != 200),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def repeated_rollouts(work: Path, cycles: int) -> dict[str, Any]:
    repo = git_repo(work / "memory")
    a, b = make_version(repo, 3, 4096 * 16), make_version(repo, 4, 4096 * 16)  # ~16 MB each
    registry = Registry(repo)
    registry.promote(a.short_hash, "bench", "production")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        [str(BIN / "nexus-model-server"), "--port", str(port), "--repo", str(repo)],
        server_env(repo, work / "cache", NEXUS_CANARY_PERCENT="0"),
        url + "/ready",
    )
    rss: list[float] = []
    try:
        for cycle in range(cycles):
            target = b if cycle % 2 == 0 else a
            registry.promote(target.short_hash, "bench", "production")
            deadline = time.monotonic() + 60
            while sum(e["event"] == "promoted" for e in events(url)) < cycle + 1:
                if time.monotonic() > deadline:
                    raise SystemExit(f"rollout {cycle + 1} did not complete: {events(url)[-3:]}")
                time.sleep(0.1)
            time.sleep(0.3)  # the old version is freed behind its last batches
            rss.append(rss_mb(server.pid))
    finally:
        server.terminate()
        server.wait(30)
    return {
        "cycles": cycles,
        "rss_mb_after_each": [round(v, 1) for v in rss],
        "rss_mb_after_second": round(rss[1], 1),
        "rss_mb_after_last": round(rss[-1], 1),
        "growth": round(rss[-1] / rss[1] - 1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        load = asyncio.run(rollout_under_load(Path(tmp), args.rate, args.seconds))
        memory = repeated_rollouts(Path(tmp), args.cycles)
    print(
        table(
            ["", "p50 ms", "p99 ms"],
            [
                ["steady", load["steady_p50_ms"], load["steady_p99_ms"]],
                ["during the rollout", load["rollout_p50_ms"], load["rollout_p99_ms"]],
            ],
        )
    )
    print(
        f"\n{load['requests']} requests at {load['rate']:g}/s; metadata change to all traffic on "
        f"v2: {load['change_to_all_on_v2_s']} s (canary 10%, 200 items, 10 s); "
        f"lost: {load['lost']}"
    )
    print(
        f"resident memory after rollout 2: {memory['rss_mb_after_second']} MB, after rollout "
        f"{memory['cycles']}: {memory['rss_mb_after_last']} MB ({memory['growth']:+.1%})"
    )
    path = save("rollout", {"rollout_under_load": load, "repeated_rollouts": memory})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
