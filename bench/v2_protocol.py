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
Then the same image at 1, 16 and 64 clients over HTTP JSON, HTTP binary and gRPC (the stock
tritonclient.grpc.aio), through the proxy and straight to the model server.
Target (the v2 issue): binary at least 5x the JSON route's requests/s.

Then models of several tensors, binary v2 requests of one row, through the proxy and
straight to the model server at 1, 16 and 64 clients (items/s, p50, p99): Triton's
two-input INT32 model (`INPUT0`, `INPUT1` [-1, 16] -> sum and difference, ONNX) and a
BYTES model (tests/harness/text.py's handler: text in, text and INT32 out). Last, warm-up:
the CNN's first request after /ready against its steady p50.
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

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import closed_loop, figures_of, save, table
from nexus_common import v2wire
from tests.harness.models import SUM_DIFF_WIDTH, make_cnn, make_sum_diff_onnx
from tests.harness.repos import git_repo
from tests.harness.servers import console_script, free_port, run_process, server_and_proxy
from tests.harness.text import HANDLER

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


def raw_forward_rate(module: torch.jit.ScriptModule, seconds: float = 2.0) -> float:
    image = torch.zeros(SHAPE)
    with torch.inference_mode():
        module(image)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            module(image)
            count += 1
    return count / (time.perf_counter() - began)


GRPC_CLIENTS = (1, 16, 64)


async def grpc_closed_loop(address: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` stock tritonclient.grpc.aio callers sending the image back to back."""
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput

    image = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    client = triton_aio.InferenceServerClient(address)

    async def caller() -> None:
        nonlocal errors
        tensor = InferInput("input", list(SHAPE), "FP32")
        tensor.set_data_from_numpy(image)
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                await client.infer("vision", [tensor], headers={"authorization": "Bearer t0k"})
            except Exception:  # counted: a bench reports, never stops
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    await client.close()
    return figures_of(latencies, elapsed, errors)


def grpc_rows(repo: Path, cache: Path, duration: float) -> dict[str, dict[str, float]]:
    """The CNN at 1, 16 and 64 clients: HTTP JSON, HTTP binary and gRPC through the proxy,
    in one run; and HTTP binary against gRPC straight to the model server (which one the
    proxy should speak upstream)."""
    grpc_server, grpc_proxy = free_port(), free_port()
    server_flags = (
        "--grpc-port",
        str(grpc_server),
        "--log-level",
        "warning",
        "--model-name",
        "vision",
    )
    proxy_flags = ("--grpc-port", str(grpc_proxy), "--log-level", "warning")
    results: dict[str, dict[str, float]] = {}
    with server_and_proxy(repo, cache, proxy_flags, server_flags) as (proxy, server):
        token = {"Authorization": "Bearer t0k"}
        for clients in GRPC_CLIENTS:
            for name in ("v2 JSON", "v2 binary"):
                body, headers, path = bodies()[name]
                for where, base in (("proxy", f"http://{proxy}"), ("server", server)):
                    if where == "server" and name == "v2 JSON":
                        continue
                    url = base + path
                    asyncio.run(closed_loop(url, body, {**headers, **token}, clients, 0.5))
                    results[f"{where} HTTP {name.removeprefix('v2 ')}, {clients}"] = asyncio.run(
                        closed_loop(url, body, {**headers, **token}, clients, duration)
                    )
            for where, port in (("proxy", grpc_proxy), ("server", grpc_server)):
                address = f"127.0.0.1:{port}"
                asyncio.run(grpc_closed_loop(address, clients, 0.5))
                results[f"{where} gRPC, {clients}"] = asyncio.run(
                    grpc_closed_loop(address, clients, duration)
                )
    return results


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
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        make_cnn(root / "cnn.pt")
        from control_plane import Registry

        Registry(repo).store(root / "cnn.pt", "vision")
        transports = grpc_rows(repo, root / "cache", args.duration)
    print("\nThe CNN over HTTP JSON, HTTP binary and gRPC (stock tritonclient.grpc.aio), through")
    print("the proxy and straight to the model server:")
    print(
        table(
            ["route, clients", "requests/s", "p50 ms", "p99 ms", "errors"],
            [
                [
                    k,
                    f"{r['rps']:.1f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    f"{r['errors']:.0f}",
                ]
                for k, r in transports.items()
            ],
        )
    )
    saved = save("v2_grpc", {"duration_s": args.duration, "results": transports})
    print(f"wrote {saved}")
    tensors = tensor_models(args.duration)
    warm = warm_up()
    saved = save("v2_tensors", {"duration_s": args.duration, "models": tensors, "warm_up": warm})
    print(f"wrote {saved}")


def tensor_body(model: str) -> tuple[bytes, dict[str, str]]:
    """One row, every input binary, every output asked for as binary."""
    if model == "simple":
        inputs = [
            v2wire.Tensor(name, [1, SUM_DIFF_WIDTH], "INT32", np.arange(16, dtype="<i4").tobytes())
            for name in ("INPUT0", "INPUT1")
        ]
    else:
        inputs = [v2wire.Tensor("TEXT", [1, 1], "BYTES", v2wire.pack_bytes("TEXT", ["hello"]))]
    body, length = v2wire.encode_request(inputs, {"binary_data_output": True})
    headers = {v2wire.HEADER_LENGTH: str(length), "Authorization": "Bearer t0k"}
    return body, headers


def tensor_models(duration: float) -> dict[str, dict[str, dict[str, float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        make_sum_diff_onnx(root / "simple.onnx")
        (root / "suffix.txt").write_bytes(b"!")
        from control_plane import Registry

        Registry(repo).store(root / "simple.onnx", "simple")
        Registry(repo).store(root / "suffix.txt", "shout")
        results: dict[str, dict[str, dict[str, float]]] = {}
        for model, flags in (("simple", ()), ("shout", ("--handler", HANDLER))):
            server_flags = ("--model-name", model, "--log-level", "warning", *flags)
            body, headers = tensor_body(model)
            with server_and_proxy(
                repo, root / "cache", ("--log-level", "warning"), server_flags
            ) as (address, server):
                for clients in (1, 16, 64):
                    for where, base in (("proxy", f"http://{address}"), ("direct", server)):
                        url = f"{base}/v2/models/{model}/infer"
                        asyncio.run(closed_loop(url, body, headers, clients, 0.5))  # warm
                        results.setdefault(model, {})[f"{where} {clients}"] = asyncio.run(
                            closed_loop(url, body, headers, clients, duration)
                        )
    rows = [
        [model, key, f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
        for model, by in results.items()
        for key, r in by.items()
    ]
    print(f"\nmodels of several tensors: binary v2, one row a request, {duration:.0f} s per row")
    print(table(["model", "route, clients", "items/s", "p50 ms", "p99 ms"], rows))
    return results


def warm_up() -> dict[str, float]:
    """The CNN's first request after /ready against its steady p50, through the model
    server: stored without a signature (nothing to warm up with) and with one
    (`--example-input`: warm-up runs batches of 1 and 32 before /ready)."""
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_cnn(root / "cnn.pt")
        np.savez(root / "example.npz", input=np.zeros(SHAPE, dtype=np.float32))
        body, headers, path = bodies()["v2 binary"]
        headers = {**headers, "Authorization": "Bearer t0k"}
        from control_plane import Registry

        for label, example in (("no signature", None), ("signature", root / "example.npz")):
            repo = git_repo(root / label.replace(" ", "-"))
            Registry(repo).store(root / "cnn.pt", "vision", example_input=example)
            with server_and_proxy(repo, root / f"cache-{label}") as (_, server):
                first = _timed_post(server + path, body, headers)
                steady = sorted(_timed_post(server + path, body, headers) for _ in range(50))
            result[f"{label}: first_ms"] = first * 1e3
            result[f"{label}: steady_p50_ms"] = statistics.median(steady) * 1e3
    print("\nwarm-up (TinyCNN, 1x3x224x224, binary v2 straight to the model server):")
    for label in ("no signature", "signature"):
        print(
            f"  stored with {label}: first request after /ready "
            f"{result[f'{label}: first_ms']:.1f} ms, steady p50 "
            f"{result[f'{label}: steady_p50_ms']:.1f} ms"
        )
    return result


def _timed_post(url: str, body: bytes, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    reply = httpx.post(url, content=body, headers=headers, timeout=60)
    reply.raise_for_status()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
