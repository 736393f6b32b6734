"""A Hugging Face model through the full stack, against its own batched rate and LitServe.

    python bench/real_models.py [--seconds 4] [--no-base]

The tiny BERT of the tests (tests/harness/hf.py: 2 layers, hidden 32) and a BERT-base-sized
one (12 layers, hidden 768, 110 M random weights), each a transformers folder stored with
`nexus store DIR` and served with no code by `nexus-model-server` (one confined worker)
behind `nexus-proxy`, as real processes. wrk (closed loop) at 1, 16 and 64 clients sends
`POST /predict {"text": ...}` (JSON text) and `POST /v2/models/NAME/infer` with a BYTES input
(v2). Columns: items/s, p50, p99, and the ratio to the ideal: the model's own batched rate
in this process (tokenizer and forward at batch 32 on the same sentences). The same folder
behind LitServe (bench/litserve_bert.py: batches of up to 32 or 50 ms, one worker) is the
reference peer, measured in the same run with the same wrk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table, wrk
from control_plane import Registry
from tests.harness.hf import SENTENCES, make_tiny_bert
from tests.harness.repos import git_repo
from tests.harness.servers import free_port, run_process, server_and_proxy

CLIENTS = (1, 16, 64)
BASE = {"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072, "positions": 512}
TEXT = SENTENCES[3]  # the longest: "the plot was fine but the ending was terrible"


def in_process_rate(folder: Path, seconds: float = 3.0) -> float:
    """Items/s of tokenizer + forward at batch 32, in this process: the ideal."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True)
    texts = [TEXT] * 32
    with torch.inference_mode():
        model(**tokenizer(texts, padding="longest", return_tensors="pt"))
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            model(**tokenizer(texts, padding="longest", return_tensors="pt"))
            count += 32
    return count / (time.perf_counter() - began)


def measure(
    name: str, folder: Path, repo: Path, cache: Path, seconds: float
) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    json_body = json.dumps({"text": TEXT})
    v2_body = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}]}
    )
    token = {"Authorization": "Bearer t0k"}
    flags = ["--model-name", name, "--log-level", "warning"]
    with server_and_proxy(repo, cache, ["--log-level", "warning"], flags) as (proxy, _):
        base = f"http://{proxy}"
        wrk(base + "/predict", json_body, 16, 1.0)  # warm
        for clients in CLIENTS:
            rows[f"nexus JSON text, {clients}"] = wrk(
                base + "/predict", json_body, clients, seconds
            )
            rows[f"nexus v2 BYTES, {clients}"] = wrk(
                f"{base}/v2/models/{name}/infer", v2_body, clients, seconds, token
            )
    port = free_port()
    peer = [
        sys.executable,
        str(Path(__file__).with_name("litserve_bert.py")),
        str(folder),
        str(port),
    ]
    with run_process(peer, f"http://127.0.0.1:{port}/health", timeout_s=120):
        url = f"http://127.0.0.1:{port}/predict"
        wrk(url, json_body, 16, 1.0)
        for clients in CLIENTS:
            rows[f"LitServe JSON text, {clients}"] = wrk(url, json_body, clients, seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per row")
    parser.add_argument("--no-base", action="store_true", help="the tiny BERT only")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    models = {"tiny": {}} if args.no_base else {"tiny": {}, "base": BASE}
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        for name, sizes in models.items():
            folder = root / f"bert-{name}"
            make_tiny_bert(folder, "classification", **sizes)
            Registry(repo).store(folder, f"bert-{name}")
            ideal = in_process_rate(folder)
            rows = measure(f"bert-{name}", folder, repo, root / "cache", args.seconds)
            results[name] = {"ideal_items_per_s": ideal, "rows": rows}
            print(f"\nBERT {name} ({sizes or 'hidden 32, 2 layers'}): in process at batch 32, "
                  f"{ideal:.0f} items/s (the ideal)")  # fmt: skip
            print(
                table(
                    ["stack, clients", "items/s", "p50 ms", "p99 ms", "of ideal", "errors"],
                    [
                        [
                            k,
                            f"{r['rps']:.0f}",
                            f"{r['p50_ms']:.1f}",
                            f"{r['p99_ms']:.1f}",
                            f"{r['rps'] / ideal:.2f}",
                            f"{r['errors']:.0f}",
                        ]
                        for k, r in rows.items()
                    ],
                )
            )
    saved = save("real_models", {"seconds": args.seconds, "models": results})
    print(f"wrote {saved}")


if __name__ == "__main__":
    main()
