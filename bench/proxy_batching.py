"""Batching proxy throughput and latency against a simulated 20 ms-per-batch model.

    python bench/proxy_batching.py [--duration 10]

Load generator: wrk (Debian package `wrk`, written in C, one thread), so the
load generator is not the bottleneck. Prints one table and writes
bench/results/proxy_batching.json. Rows:
  - the proxy (eager and --no-eager) at 64 and 256 concurrent clients,
  - no batching: the same model, one item per forward pass (wrk straight to
    /predict/batch with one input, 64 clients),
  - the ideal: 32 items / 0.020 s = 1,600 items/s,
  - one keep-alive client: p50 through the proxy beside the direct call.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from tests.servers import free_port, run_process

BATCH_MS = 20.0
IDEAL = 32 / (BATCH_MS / 1000)
ITEM = '{"input": [0.1, 0.2, 0.3, 0.4]}'


def wrk(url: str, body: str, connections: int, duration: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [[{body}]]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(duration)}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            script.name,
            url,
        ],
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    results: dict[str, dict[str, float]] = {}
    with run_process(
        [
            sys.executable,
            "-m",
            "bench.sim_model",
            "--port",
            str(sim_port),
            "--latency-ms",
            str(BATCH_MS),
        ],
        sim_url + "/health",
    ):
        direct_body = '{"inputs": [' + ITEM + "]}"
        # One client first: the 64-client run leaves a queue behind the model's lock.
        results["direct, 1 client"] = wrk(sim_url + "/predict/batch", direct_body, 1, args.duration)
        results["no batching, 64 clients"] = wrk(
            sim_url + "/predict/batch", direct_body, 64, args.duration
        )
        for policy in ("eager", "no-eager"):
            port = free_port()
            proxy_url = f"http://127.0.0.1:{port}"
            with run_process(
                [
                    str(Path(sys.executable).with_name("nexus-proxy")),
                    "--port",
                    str(port),
                    "--upstream",
                    sim_url,
                    f"--{policy}",
                    "--log-level",
                    "warning",
                ],
                proxy_url + "/ready",
            ):
                for clients in (1, 64, 256):
                    results[f"proxy {policy}, {clients} clients"] = wrk(
                        proxy_url + "/predict", ITEM, clients, args.duration
                    )
    _report(results, args.duration)


def _report(results: dict[str, dict[str, float]], duration: float) -> None:
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r['rps']:.0f}",
                f"{r['rps'] / IDEAL:.0%}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['errors']:.0f}",
            ]
        )
    rows.append(["ideal (32 / 20 ms)", f"{IDEAL:.0f}", "100%", "", "", ""])
    direct = results["direct, 1 client"]["p50_ms"]
    eager1 = results["proxy eager, 1 clients"]["p50_ms"]
    fixed1 = results["proxy no-eager, 1 clients"]["p50_ms"]
    print(
        f"simulated model: {BATCH_MS:.0f} ms per batch, one batch at a time; "
        f"wrk -t1, {duration:.0f} s per row"
    )
    print(table(["setup", "items/s", "of ideal", "p50 ms", "p99 ms", "non-2xx"], rows))
    print(
        f"1 client: eager p50 is {eager1 - direct:+.2f} ms vs the direct call "
        f"(target <= +2 ms); no-eager is {fixed1 - direct - 50:+.2f} ms vs direct + 50 ms "
        f"(target within 5 ms)"
    )
    path = save("proxy_batching", {"batch_ms": BATCH_MS, "ideal": IDEAL, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
