"""Images through the proxy: the JSON `/predict` route against the v2 protocol, JSON and binary.

    python bench/v2_protocol.py [--duration 5] [--clients 8]

One 1x3x224x224 float32 image a request (602 KB as bytes, ~3 MB as JSON text), a small
TorchScript CNN (tests/harness/models.py's TinyCNN) in `nexus-model-server`, `nexus-proxy` in
front, both real processes on loopback; closed-loop aiohttp clients, each sending its next
request when answered. Side by side, in one run: requests/s, p50 and p99 for
- `POST /predict`          {"input": nested lists}, the proxy's JSON batch contract,
- `POST /v2/.../infer`     JSON tensor data (flat list),
- `POST /v2/.../infer`     the binary data extension, binary output,
and, as the raw baseline, the model's own forward rate at batch 1 in this process.
Target (the v2 issue): binary at least 5x the JSON route's requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from tests.harness.models import make_cnn
from tests.harness.repos import git_repo
from tests.harness.servers import console_script, free_port, run_process

SHAPE = (1, 3, 224, 224)


def bodies() -> dict[str, tuple[bytes, dict[str, str], str]]:
    image = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": list(SHAPE),
                "datatype": "FP32",
                "parameters": {"binary_data_size": image.nbytes},
            }
        ],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header).encode()
    as_json = {
        "inputs": [
            {
                "name": "input",
                "shape": list(SHAPE),
                "datatype": "FP32",
                "data": image.ravel().tolist(),
            }
        ]
    }
    return {
        "JSON /predict": (
            json.dumps({"input": image[0].tolist()}).encode(),
            {"content-type": "application/json"},
            "/predict",
        ),
        "v2 JSON": (
            json.dumps(as_json).encode(),
            {"content-type": "application/json"},
            "/v2/models/vision/infer",
        ),
        "v2 binary": (
            encoded + image.tobytes(),
            {
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(encoded)),
            },
            "/v2/models/vision/infer",
        ),
    }


async def closed_loop(
    url: str, body: bytes, headers: dict[str, str], clients: int, seconds: float
) -> dict[str, float]:
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
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3 if latencies else 0.0,
        "errors": float(errors),
    }


def raw_forward_rate(module: torch.jit.ScriptModule, seconds: float = 2.0) -> float:
    image = torch.zeros(SHAPE)
    with torch.inference_mode():
        module(image)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            module(image)
            count += 1
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        module = make_cnn(root / "cnn.pt")
        from control_plane import Registry

        Registry(repo).store(root / "cnn.pt", "vision")
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-qm", "store"], cwd=repo, check=True)
        raw = raw_forward_rate(module)
        server_port, proxy_port = free_port(), free_port()
        server = f"http://127.0.0.1:{server_port}"
        proxy = f"http://127.0.0.1:{proxy_port}"
        env = dict(os.environ, NEXUS_CACHE_DIR=str(root / "cache"), NEXUS_MAX_BATCH="256")
        serve = [console_script("nexus-model-server"), "--port", str(server_port)]
        serve += ["--repo", str(repo), "--log-level", "warning"]
        front = [console_script("nexus-proxy"), "--port", str(proxy_port), "--upstream", server]
        front += ["--log-level", "warning"]
        results: dict[str, dict[str, float]] = {}
        with run_process(serve, server + "/ready", env=env), run_process(front, proxy + "/ready"):
            for name, (body, headers, path) in bodies().items():
                asyncio.run(closed_loop(proxy + path, body, headers, args.clients, 1.0))  # warm
                results[name] = asyncio.run(
                    closed_loop(proxy + path, body, headers, args.clients, args.duration)
                )
                results[name]["body_bytes"] = float(len(body))
    json_rps = results["JSON /predict"]["rps"]
    rows = [
        [
            name,
            f"{r['body_bytes'] / 1e6:.2f}",
            f"{r['rps']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['rps'] / json_rps:.1f}x",
        ]
        for name, r in results.items()
    ]
    rows.append(["raw forward (batch 1, in process)", "", f"{raw:.1f}", "", "", ""])
    print(
        f"1x3x224x224 float32 through nexus-proxy -> nexus-model-server (TinyCNN), "
        f"{args.clients} closed-loop clients, {args.duration:.0f} s per row"
    )
    print(table(["route", "body MB", "requests/s", "p50 ms", "p99 ms", "vs JSON"], rows))
    binary = results["v2 binary"]["rps"] / json_rps
    print(
        f"target: binary >= 5x the JSON route: {'met' if binary >= 5 else 'missed'} ({binary:.1f}x)"
    )
    saved = save(
        "v2_protocol",
        {"clients": args.clients, "duration_s": args.duration, "results": results, "raw": raw},
    )
    print(f"wrote {saved}")


if __name__ == "__main__":
    main()
