"""`--instances`: batches that hold the GIL for 20 ms, through the proxy at 64 clients, with
one worker, two workers, and the model in the server's process.

    python bench/instances.py [--seconds 5] [--clients 64]

`nexus-model-server` with a handler (tests/harness/gil.py) whose every batch holds the GIL
for 20 ms, `nexus-proxy` in front (adaptive policy, up to 32 items a batch), both real
processes; closed-loop wrk clients posting one item each to `/predict` (wrk, not a Python
client: at 64 clients two instances leave no queue to hide a caller's turnaround, and a
Python client's own 150 us per answer and request would be a third of the measurement). The ideal:
each instance answers a full batch of 32 every 20 ms, so N instances give N x 1,600
items/s. Target (the workers issue): two instances >= 1.8x the items/s of one, with the
handler that waits holding the GIL. The handler that spins in Python is shown too: on a
machine with few cores, two spinning workers compete with the proxy and the clients for
the CPUs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table, wrk
from control_plane import Registry
from tests.harness.gil import BATCH_SECONDS, BURNS, HOLDS
from tests.harness.repos import git_repo
from tests.harness.servers import server_and_proxy

MAX_BATCH = 32
ITEM = '{"x": 1}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per row")
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        (root / "weights.bin").write_bytes(b"the handler ignores them")
        Registry(repo).store(root / "weights.bin", "gil")
        for handler_name, handler in (("waits holding the GIL", HOLDS), ("spins", BURNS)):
            for label, flags in (
                ("in process", ["--in-process"]),
                ("1 instance", ["--instances", "1"]),
                ("2 instances", ["--instances", "2"]),
            ):
                server_flags = ["--handler", handler, "--log-level", "warning", *flags]
                proxy_flags = ["--max-batch-size", str(MAX_BATCH), "--log-level", "warning"]
                with server_and_proxy(repo, root / "cache", proxy_flags, server_flags) as (
                    proxy,
                    _,
                ):
                    url = f"http://{proxy}/predict"
                    wrk(url, ITEM, args.clients, 1.0)  # warm
                    measured = wrk(url, ITEM, args.clients, args.seconds)
                results[f"{handler_name}: {label}"] = measured
    ideal = MAX_BATCH / BATCH_SECONDS
    rows = [
        [name, f"{r['rps']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['errors']:.0f}"]
        for name, r in results.items()
    ]
    print(
        f"{args.clients} closed-loop clients -> nexus-proxy -> nexus-model-server, batches "
        f"holding the GIL {BATCH_SECONDS * 1e3:.0f} ms; ideal {ideal:.0f} items/s per instance"
    )
    print(table(["handler: where it runs", "items/s", "p50 ms", "p99 ms", "errors"], rows))
    verdicts = {}
    for handler_name in ("waits holding the GIL", "spins"):
        ratio = (
            results[f"{handler_name}: 2 instances"]["rps"]
            / results[f"{handler_name}: 1 instance"]["rps"]
        )
        verdicts[handler_name] = ratio
        print(f"{handler_name}: 2 instances = {ratio:.2f}x one instance")
    held = verdicts["waits holding the GIL"]
    print(f"target: >= 1.8x with the handler that waits: {'met' if held >= 1.8 else 'missed'}")
    saved = save(
        "instances",
        {
            "clients": args.clients,
            "seconds": args.seconds,
            "ideal_per_instance": ideal,
            "results": results,
            "two_over_one": verdicts,
        },
    )
    print(f"wrote {saved}")


if __name__ == "__main__":
    main()
