"""Batching proxy against simulated models: closed-loop clients and open-loop arrivals.

    python bench/proxy_batching.py [--duration 5] [--models 20ms,linear,two] [--compare]

For each simulated model (tests/harness/sim_model.py):
  - 20ms    20 ms a batch whatever its size, one batch at a time (ideal 1,600 items/s),
  - linear  5 ms + 0.5 ms per item, one at a time (a batch of 32 takes 21 ms),
  - two     20 ms a batch, two batches at once (the health header says 2),
it prints one table: the direct call at one client; the proxy (adaptive, the
default) with 1, 8, 16, 32, 64, 128 and 256 closed-loop wrk clients (items/s,
p50, p99, ratio to the ideal: every waiting caller served in as few full runs
as the slots allow); and open-loop Poisson arrivals from tests/harness/open_loop.py at
25%, 50% and 90% of capacity (p50, p99); beside each, the simulated device's busy share
and mean batch size, from its own log. `--compare` adds the eager and fixed
policies at 8, 32, 64 and 256 clients on the first model. Results go to
bench/results/proxy_batching.json.

Where the host has two cores or more, the proxy runs on a core of its own and the
load generators (wrk, the open-loop arrivals) and the simulated model on the others,
as a proxy is deployed (its callers and its models are other machines): on a shared
core the proxy's one thread waits behind wrk's and the model's work on the callers'
return trip, which is what the closed-loop ratio measures. `--no-pin` leaves the
placement to the scheduler.

Targets (DESIGN.md and the adaptive-batching issue): >= 0.85 of the ideal at
8-32 clients and >= 0.9 from 64; one client within 1.5 ms of a direct call;
open loop p50 <= 1.5x the model's batch time at 50% load, p99 <= 3x at 90%.
The batch time is the full batch's (32 items), as a client calling the model
directly sees it: the nominal time plus the direct call's HTTP overhead.

Two columns say what bounds a row. Closed loop: the proxy's CPU per item (its process's
CPU time over the items it answered); below 64 clients the model's idle time per batch
is the callers' return trip, and that CPU times the batch size is most of it. Open loop:
the p50 floor, below which no batcher can go here (`open_loop_floor_ms`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table, wrk
from tests.harness.open_loop import open_loop
from tests.harness.servers import free_port, run_process
from tests.harness.simulation import MODELS, Model, open_loop_floor_ms

ITEM = '{"input": [0.1, 0.2, 0.3, 0.4]}'
CLIENTS = (1, 8, 16, 32, 64, 128, 256)
LOADS = (0.25, 0.50, 0.90)


def _sim(model: Model, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "tests.harness.sim_model", "--port", str(port)),
        *("--latency-ms", str(model.fixed_s * 1000), "--per-item-ms", str(model.per_item_s * 1000)),
        *("--concurrency", str(model.concurrency)),
    ]


def placement(pin: bool) -> tuple[set[int], set[int]] | None:
    """The proxy's core and the other processes' cores, or None: no pinning (asked not
    to, one core only, or a platform without CPU affinity)."""
    if not pin or not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[0]}, set(cores[1:])


def _pinned(cores: set[int] | None) -> dict[str, Any]:
    """Popen arguments that start a process on `cores` (none: where the scheduler likes)."""
    if cores is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, cores)}


def _proxy(port: int, upstream: str, policy: str, *extra: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("nexus-proxy")),
        *("--port", str(port), "--upstream", upstream, "--policy", policy),
        *("--log-level", "warning"),
        *extra,
    ]


def bench_model(
    name: str, model: Model, duration: float, compare: bool, proxy_cores: set[int] | None
) -> dict[str, Any]:
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    result: dict[str, Any] = {"closed": {}, "open": {}, "compare": {}}
    with run_process(_sim(model, sim_port), sim_url + "/health"):
        result["direct"] = wrk(
            sim_url + "/predict/batch", '{"inputs": [' + ITEM + "]}", 1, duration
        )
        policies = ["adaptive", *(("eager", "fixed") if compare else ())]
        for policy in policies:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proxy = _proxy(port, sim_url, policy)
            with run_process(proxy, url + "/ready", **_pinned(proxy_cores)) as process:
                if policy == "adaptive":
                    for clients in CLIENTS:
                        _device_reset(sim_url)
                        cpu = _cpu_seconds(process.pid)
                        row = wrk(url + "/predict", ITEM, clients, duration)
                        cpu = _cpu_seconds(process.pid) - cpu
                        device = _device(sim_url, model)
                        result["closed"][clients] = {
                            **row,
                            **device,
                            "proxy_cpu_us": cpu / (row["rps"] * round(duration)) * 1e6,
                            "ideal": model.ideal(clients),
                        }
                    for load in LOADS:
                        rate = load * model.capacity()
                        _device_reset(sim_url)
                        run = _open_loop(url + "/predict", rate, duration)
                        result["open"][load] = {**run, **_device(sim_url, model)}
                else:
                    for clients in (8, 32, 64, 256):
                        row = wrk(url + "/predict", ITEM, clients, duration)
                        result["compare"][f"{policy} {clients}"] = {
                            **row,
                            "ideal": model.ideal(clients),
                        }
    return result


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _device_reset(sim_url: str) -> None:
    httpx.post(sim_url + "/_control", json={"reset": True, "record_inputs": False})


def _device(sim_url: str, model: Model) -> dict[str, float]:
    """The simulated device's side of a row: the share of the time its slots were running
    a batch, its idle time per batch, and the mean batch size. Below the ideal, the busy
    share says how much of the loss is the device idling (callers coming back through
    HTTP: the idle time per batch is that return trip) and the size how much is
    batches left small."""
    batches = httpx.get(sim_url + "/_batches", timeout=30).json()["batches"]
    if len(batches) < 2:
        return {"device_busy": 0.0, "mean_batch": 0.0, "idle_per_batch_ms": 0.0}
    span = max(b["ended"] for b in batches) - min(b["started"] for b in batches)
    running = sum(b["ended"] - b["started"] for b in batches)
    return {
        "device_busy": running / (span * model.concurrency),
        "mean_batch": sum(b["size"] for b in batches) / len(batches),
        "idle_per_batch_ms": (span * model.concurrency - running) / len(batches) * 1000,
    }


def _open_loop(url: str, rate: float, duration: float) -> dict[str, float]:
    import uvloop

    return uvloop.run(open_loop(url, ITEM.encode(), rate, duration)).as_dict()


def report(name: str, model: Model, result: dict[str, Any]) -> list[str]:
    """Print the model's table; return the targets it missed."""
    direct = result["direct"]
    overhead_ms = direct["p50_ms"] - model.seconds(1) * 1000
    batch_ms = model.seconds(32) * 1000 + overhead_ms
    rows: list[list[str]] = [
        ["direct, 1 client", f"{direct['rps']:.0f}", "", f"{direct['p50_ms']:.2f}"]
    ]
    missed = []
    for clients, r in result["closed"].items():
        ratio = r["rps"] / r["ideal"]
        rows.append(
            [
                f"proxy, {clients} closed-loop",
                f"{r['rps']:.0f}",
                f"{r['ideal']:.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{ratio:.2f}",
                f"{r['device_busy']:.0%}",
                f"{r['idle_per_batch_ms']:.2f}",
                f"{r['mean_batch']:.1f}",
                f"{r['proxy_cpu_us']:.0f}",
            ]
        )
        if clients == 1 and r["p50_ms"] - direct["p50_ms"] > 1.5:
            missed.append(f"{name}: 1 client +{r['p50_ms'] - direct['p50_ms']:.2f} ms")
        elif clients > 1 and ratio < (0.9 if clients >= 64 else 0.85):
            missed.append(f"{name}: {clients} clients at {ratio:.2f} of the ideal")
    hop_ms = result["closed"][1]["p50_ms"] - direct["p50_ms"] if 1 in result["closed"] else 0.0
    floor = open_loop_floor_ms(model, direct["p50_ms"], hop_ms) / batch_ms
    for load, r in result["open"].items():
        rows.append(
            [
                f"proxy, open loop {load:.0%} ({r['rate']:.0f}/s)",
                f"{r['achieved']:.0f}",
                "",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['p50_ms'] / batch_ms:.2f}x / {r['p99_ms'] / batch_ms:.2f}x",
                f"{r['device_busy']:.0%}",
                f"{r['idle_per_batch_ms']:.2f}",
                f"{r['mean_batch']:.1f}",
                "",
                f"{floor:.2f}x",
            ]
        )
        if load == 0.5 and r["p50_ms"] > 1.5 * batch_ms:
            beyond = f" (no batcher goes under {floor:.2f}x here)" if floor > 1.5 else ""
            missed.append(f"{name}: open loop 50% p50 {r['p50_ms'] / batch_ms:.2f}x{beyond}")
        if load == 0.9 and r["p99_ms"] > 3 * batch_ms:
            missed.append(f"{name}: open loop 90% p99 {r['p99_ms'] / batch_ms:.2f}x")
        if r["errors"]:
            missed.append(f"{name}: open loop {load:.0%} had {r['errors']:.0f} errors")
    for label, r in result["compare"].items():
        rows.append(
            [
                f"proxy {label} closed-loop",
                f"{r['rps']:.0f}",
                f"{r['ideal']:.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['rps'] / r['ideal']:.2f}",
            ]
        )
    print(
        f"\n{name}: {model.fixed_s * 1000:g} ms + {model.per_item_s * 1000:g} ms/item, "
        f"{model.concurrency} at once; capacity {model.capacity():.0f} items/s; "
        f"a full batch as a client sees it: {batch_ms:.1f} ms"
    )
    headers = ["setup", "items/s", "ideal", "p50 ms", "p99 ms", "ratio (open: p50/p99 ÷ batch)"]
    headers += ["device busy", "idle/batch ms", "mean batch", "proxy CPU/item µs", "p50 floor"]
    print(table(headers, rows))
    return missed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row")
    parser.add_argument("--models", default=",".join(MODELS), help="of: " + ", ".join(MODELS))
    parser.add_argument("--compare", action="store_true", help="eager and fixed rows too")
    parser.add_argument("--no-pin", action="store_true", help="no core of the proxy's own")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    cores = placement(not args.no_pin)
    if cores is not None:  # this process, wrk and the simulated model: the other cores
        os.sched_setaffinity(0, cores[1])
    where = "unpinned" if cores is None else f"proxy on a core, the rest on {len(cores[1])}"
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    results: dict[str, Any] = {}
    missed: list[str] = []
    for index, name in enumerate(names):
        model = MODELS[name]
        compare = args.compare and index == 0
        results[name] = bench_model(
            name, model, args.duration, compare, None if cores is None else cores[0]
        )
        missed += report(name, model, results[name])
    print(
        f"\nwrk -t1 (closed loop), tests/harness/open_loop.py (Poisson), "
        f"{args.duration:.0f} s per row; {os.cpu_count()} cores, {where}"
    )
    print("targets: all met" if not missed else "targets missed: " + "; ".join(missed))
    if cores is not None:  # the machine's cores again, as the results record them
        os.sched_setaffinity(0, cores[0] | cores[1])
    path = save(
        "proxy_batching", {"duration_s": args.duration, "placement": where, "results": results}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
