"""Model server overhead: items/s through POST /predict/batch and the v2 binary protocol vs
the model called in-process.

    python bench/model_server_overhead.py [--seconds 5] [--device cuda]

A TorchScript MLP (64 -> 256 -> 256 -> 10) is stored in a temporary Git repo
and served by a real model server process on the CPU (or `--device`). One keep-alive
httpx client sends batches back to back. Columns: the raw forward pass on a
ready tensor (the ideal), the server's predictor in-process (JSON items ->
tensor -> forward -> lists; no HTTP), the full HTTP round trip with JSON items, and
the same batch as one binary tensor through `POST /v2/models/mlp/infer` (binary output).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from control_plane import Registry
from model_server.inference import build_predictor
from nexus_common import v2wire
from tests.harness.repos import git_repo

FEATURES = 64


def make_model(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).eval()
    torch.jit.script(model).save(str(path))
    return model


def rate(fn, items: int, seconds: float) -> float:
    fn()  # warm
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count * items / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = git_repo(Path(tmp) / "repo")
        model_path = Path(tmp) / "mlp.pt"
        model = make_model(model_path)
        Registry(repo).store(model_path, "mlp")
        predictor = build_predictor(model_path, fmt=None, device=args.device)
        if args.device != "cpu":
            model = model.to(args.device)
        port = 18000 + os.getpid() % 1000
        env = dict(os.environ, NEXUS_CACHE_DIR=str(Path(tmp) / "cache"))
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "model_server", "--port", str(port), "--repo", str(repo)),
                *("--device", args.device, "--log-level", "warning"),
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                for _ in range(300):
                    try:
                        if client.get("/ready").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
                rows, results = [], {}
                rng = np.random.default_rng(0)
                for size in (1, 8, 32):
                    batch = rng.standard_normal((size, FEATURES)).astype(np.float32)
                    tensor = torch.from_numpy(batch).to(args.device)
                    items = [{"input": row.tolist()} for row in batch]
                    body = {"inputs": items}

                    def raw(tensor: torch.Tensor = tensor) -> None:
                        with torch.inference_mode():
                            model(tensor).cpu()  # the answer back on the host, as served

                    def http(body: dict[str, list[dict[str, list[float]]]] = body) -> None:
                        client.post("/predict/batch", json=body).raise_for_status()

                    tensor_in = v2wire.Tensor("input", list(batch.shape), "FP32", batch.tobytes())
                    v2_body, v2_length = v2wire.encode_request(
                        [tensor_in], {"binary_data_output": True}
                    )
                    v2_headers = {
                        v2wire.HEADER_LENGTH: str(v2_length),
                        "content-type": v2wire.BINARY_CONTENT_TYPE,
                    }

                    def binary(data: bytes = v2_body, headers: dict[str, str] = v2_headers) -> None:
                        reply = client.post("/v2/models/mlp/infer", content=data, headers=headers)
                        reply.raise_for_status()

                    raw_rate = rate(raw, size, args.seconds)
                    pred_rate = rate(
                        lambda items=items: predictor.predict(items), size, args.seconds
                    )
                    http_rate = rate(http, size, args.seconds)
                    binary_rate = rate(binary, size, args.seconds)
                    results[size] = {
                        "raw": raw_rate,
                        "predictor": pred_rate,
                        "http": http_rate,
                        "v2_binary": binary_rate,
                    }
                    rows.append(
                        [
                            size,
                            f"{raw_rate:,.0f}",
                            f"{pred_rate:,.0f}",
                            f"{http_rate:,.0f}",
                            f"{http_rate / raw_rate:.2f}",
                            f"{binary_rate:,.0f}",
                            f"{binary_rate / raw_rate:.2f}",
                            f"{1000 * size / http_rate:.2f}",
                        ]
                    )
        finally:
            server.terminate()
            server.wait(30)
    print(
        f"TorchScript MLP {FEATURES}-256-256-10 on {args.device} "
        f"({torch.get_num_threads()} torch threads), "
        f"one keep-alive client, {args.seconds:.0f} s per cell"
    )
    print(
        table(
            [
                "batch",
                "raw forward items/s",
                "predictor items/s",
                "HTTP JSON items/s",
                "JSON / raw",
                "v2 binary items/s",
                "binary / raw",
                "JSON ms per batch",
            ],
            rows,
        )
    )
    print(f"wrote {save('model_server_overhead', {'results': results})}")


if __name__ == "__main__":
    main()
