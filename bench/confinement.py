"""What confinement costs: the CNN in the server's process against the CNN in a confined
worker, at batch 1 and 32, in one run.

    python bench/confinement.py [--seconds 3]

TinyCNN (tests/harness/models.py: 1x3x224x224 float32 in, 5 floats out), TorchScript, on
the CPU. Two levels, each with its ideal beside it:
- the predictor, called in this process as the model server's inference thread calls it
  (`run_named`: a batch of arrays in, named arrays out; read-only, as the v2 route decodes
  them from a request body): the raw forward pass on a ready tensor (the ideal), the
  in-process predictor (today's path: torch needs a writable copy), and the worker predictor
  (the batch written into the worker's shared memory, a JSON message each way over the
  socketpair, the outputs copied back), confined by seccomp, Landlock and limits;
- the model server as a real process (`nexus-model-server`, and `--in-process`), one
  keep-alive client posting binary v2 requests back to back.
p50 per batch and items/s. Targets (the workers issue): the worker within 5% of the
in-process items/s at batch 32 and within 0.3 ms of its p50 at batch 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import closed_loop, save, table
from control_plane import Registry
from model_server.predictor import Predictor
from model_server.service import load_entry
from model_server.settings import ServerSettings
from model_server.tensors import TensorPredictor
from nexus_common import v2wire
from tests.harness.models import make_cnn
from tests.harness.repos import git_repo
from tests.harness.servers import console_script, free_port, run_process

SHAPE = (3, 224, 224)
BATCHES = (1, 32)


def timed(call: Callable[[], object], seconds: float) -> list[float]:
    call()
    latencies = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return latencies


def figures(latencies: list[float], batch: int) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(latencies) * 1e3,
        "items_per_s": batch * len(latencies) / sum(latencies),
    }


def predictor_level(
    repo: Path, cache: Path, module: torch.jit.ScriptModule, seconds: float
) -> dict[str, dict[str, float]]:
    entry = Registry(repo).resolve("latest", "cnn")
    predictors: dict[str, Predictor] = {}
    for label, in_process in (("in process", True), ("worker (confined)", False)):
        settings = ServerSettings(repo=repo, cache_dir=cache, in_process=in_process)
        predictors[label] = load_entry(settings, entry)
    results: dict[str, dict[str, float]] = {}
    try:
        for batch in BATCHES:
            images = np.random.default_rng(0).standard_normal((batch, *SHAPE)).astype(np.float32)
            tensor = torch.from_numpy(images)
            images.setflags(write=False)  # as the v2 route hands them over: views of the body
            with torch.inference_mode():
                latencies = timed(functools.partial(module, tensor), seconds)
            results[f"raw forward, batch {batch}"] = figures(latencies, batch)
            # alternate the two paths in rounds, so a drift of the machine hits both alike
            rounds: dict[str, list[float]] = {label: [] for label in predictors}
            for _ in range(3):
                for label, predictor in predictors.items():
                    assert isinstance(predictor, TensorPredictor)
                    call = functools.partial(predictor.run_named, {"input": images})
                    rounds[label] += timed(call, seconds / 3)
            for label, latencies in rounds.items():
                results[f"{label}, batch {batch}"] = figures(latencies, batch)
    finally:
        for predictor in predictors.values():
            predictor.close()
    return results


def server_level(repo: Path, cache: Path, seconds: float) -> dict[str, dict[str, float]]:
    """Both servers up at once, measured in alternating rounds (a drift hits both alike)."""
    modes = {"server --in-process": ["--in-process"], "server, worker": []}
    urls = {label: f"http://127.0.0.1:{free_port()}" for label in modes}
    results: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        for label, flags in modes.items():
            port = urls[label].rsplit(":", 1)[1]
            args = [
                *(console_script("nexus-model-server"), "--port", port, "--repo", str(repo)),
                *("--cache-dir", str(cache), "--log-level", "warning", *flags),
            ]
            stack.enter_context(run_process(args, urls[label] + "/ready"))
        for batch in BATCHES:
            images = np.random.default_rng(0).standard_normal((batch, *SHAPE))
            tensor = v2wire.Tensor(
                "input", [batch, *SHAPE], "FP32", raw=images.astype("<f4").tobytes()
            )
            body, length = v2wire.encode_request([tensor], {"binary_data_output": True})
            headers = {v2wire.HEADER_LENGTH: str(length)}
            rounds: dict[str, list[dict[str, float]]] = {label: [] for label in modes}
            for _ in range(3):
                for label in modes:
                    infer = urls[label] + "/v2/models/cnn/infer"
                    rounds[label].append(
                        asyncio.run(closed_loop(infer, body, headers, 1, seconds / 3))
                    )
            for label, measured in rounds.items():
                results[f"{label}, batch {batch}"] = {
                    "p50_ms": statistics.median(m["p50_ms"] for m in measured),
                    "items_per_s": statistics.mean(m["rps"] for m in measured) * batch,
                }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        module = make_cnn(root / "cnn.pt")
        Registry(repo).store(root / "cnn.pt", "cnn")
        cache = root / "cache"
        inner = predictor_level(repo, cache, module, args.seconds)
        outer = server_level(repo, cache, args.seconds)
    rows = []
    for name, measured in {**inner, **outer}.items():
        rows.append([name, f"{measured['p50_ms']:.2f}", f"{measured['items_per_s']:.0f}"])
    print(f"TinyCNN 1x3x224x224, TorchScript, CPU ({torch.get_num_threads()} threads)")
    print(table(["path", "p50 ms", "items/s"], rows))
    verdicts = {}
    for level, (base, worker) in {
        "predictor": ("in process", "worker (confined)"),
        "server": ("server --in-process", "server, worker"),
    }.items():
        figures_ = {**inner, **outer}
        rate = (
            figures_[f"{worker}, batch 32"]["items_per_s"]
            / figures_[f"{base}, batch 32"]["items_per_s"]
        )
        extra = figures_[f"{worker}, batch 1"]["p50_ms"] - figures_[f"{base}, batch 1"]["p50_ms"]
        verdicts[level] = {"batch32_items_ratio": rate, "batch1_p50_extra_ms": extra}
        print(
            f"{level}: worker items/s at batch 32 = {rate:.3f} of in-process "
            f"({'met' if rate >= 0.95 else 'missed'}: >= 0.95); p50 at batch 1 "
            f"{extra:+.3f} ms ({'met' if extra <= 0.3 else 'missed'}: <= 0.3 ms)"
        )
    saved = save(
        "confinement",
        {"seconds": args.seconds, "results": {**inner, **outer}, "verdicts": verdicts},
    )
    print(f"wrote {saved}")


if __name__ == "__main__":
    main()
