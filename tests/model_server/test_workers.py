"""Models in worker processes: the same outputs as in process, N instances at once, the
arenas' checks of what a worker sends, and a serving version whose workers keep dying."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from control_plane import Registry
from model_server.errors import WorkerProtocolError
from model_server.service import load_entry
from model_server.settings import ServerSettings
from model_server.tensors import TensorPredictor
from model_server.workers.arena import Arena, read_arrays, stack_into, write_arrays
from tests.harness.models import IN_FEATURES
from tests.harness.servers import console_script, free_port, run_process, server_and_proxy
from tests.model_server.handlers import store_plan

HANDLERS = "tests.model_server.handlers"


@pytest.mark.parametrize(
    ("name", "handler"),
    [("mlp_ts", None), ("mlp_onnx", None), ("mlp_state", f"{HANDLERS}:StateDictMLP")],
)
def test_a_worker_answers_exactly_as_the_server_process_does(
    stored: dict[str, torch.nn.Module], repo: Path, tmp_path: Path, name: str, handler: str | None
) -> None:
    entry = Registry(repo).resolve("latest", name)
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((9, IN_FEATURES)).astype(np.float32)
    key = "features" if handler else "input"
    items = [{key: row.tolist()} for row in rows]
    outputs: dict[object, object] = {}
    for in_process in (True, False):
        settings = ServerSettings(
            repo=repo, cache_dir=tmp_path / "cache", handler=handler, in_process=in_process
        )
        predictor = load_entry(settings, entry)
        try:
            assert predictor.runtime()["process"] == ("server" if in_process else "workers")
            outputs[in_process] = predictor.predict(items)
            if isinstance(predictor, TensorPredictor):
                named = predictor.run_named({"input": rows})
                outputs[(in_process, "v2")] = {k: v.tolist() for k, v in named.items()}
        finally:
            predictor.close()
    assert outputs[False] == outputs[True]
    if handler is None:
        assert outputs[(False, "v2")] == outputs[(True, "v2")]


def test_arrays_cross_the_arena_whole_and_what_a_worker_sends_is_checked() -> None:
    arena = Arena.create("test")
    try:
        texts = np.array([[b"a", b"bc"], [b"", b"def"]], dtype=object)
        numbers = np.arange(12, dtype=np.int64).reshape(3, 4)
        sent = write_arrays(arena, {"texts": texts, "numbers": numbers})
        got = read_arrays(arena, sent, copy=True)
        assert got["texts"].tolist() == texts.tolist()
        assert np.array_equal(got["numbers"], numbers)
        assert got["numbers"].dtype == np.int64
        items = [np.full((2, 3), i, dtype=np.float32) for i in range(40_000)]  # grows it
        stacked = read_arrays(arena, stack_into(arena, {"x": items}), copy=False)["x"]
        assert stacked.shape == (40_000, 2, 3)
        assert stacked[39_999, 1, 2] == 39_999
        for bad, said in [
            ({**sent[1], "offset": arena.size - 8}, "outside shared memory"),
            ({**sent[1], "shape": [3, 5]}, "bytes for shape"),
            ({**sent[1], "datatype": "OBJECT"}, "datatype"),
            ({**sent[0], "size": 3}, "BYTES"),
            ({"name": "x"}, "malformed"),
        ]:
            with pytest.raises(WorkerProtocolError, match=said):
                read_arrays(arena, [bad], copy=True)
    finally:
        arena.close()


def test_instances_run_batches_at_once_and_the_proxy_sees_them(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_plan(repo, {"do": "echo"}, "m")
    monkeypatch.setenv("SLOW_ECHO_SECONDS", "1.0")  # a batch long enough to overlap under load
    flags = ["--handler", f"{HANDLERS}:SlowPid", "--instances", "2"]
    flags += ["--worker-env", "SLOW_ECHO_SECONDS"]
    with server_and_proxy(repo, tmp_path / "cache", server_flags=flags) as (proxy, server):
        health = httpx.get(server + "/health")
        assert health.headers["x-nexus-max-concurrent-batches"] == "2"
        runtime = httpx.get(server + "/model").json()["runtime"]
        assert runtime["instances"] == 2
        assert len(set(runtime["pids"])) == 2

        async def two_batches() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server, timeout=30) as client:
                batch, token = {"inputs": [{"x": 1}]}, {"Authorization": "Bearer t0k"}
                sent = (client.post("/predict/batch", json=batch, headers=token) for _ in "ab")
                return list(await asyncio.gather(*sent))

        answers = asyncio.run(two_batches())
        # both batches ran, each in its own worker, overlapping in time
        spans = [answer.json()["outputs"][0] for answer in answers]
        assert {span["pid"] for span in spans} == set(runtime["pids"])
        first, second = sorted(spans, key=lambda span: span["start"])
        assert second["start"] < first["end"]
        seen = 'nexus_proxy_policy_estimate{estimate="upstream_concurrency"} 2.0'
        deadline = time.monotonic() + 30
        while seen not in httpx.get(f"http://{proxy}/metrics").text:  # read as it batches
            assert time.monotonic() < deadline, "the proxy's policy did not see 2 instances"
            assert httpx.post(f"http://{proxy}/predict", json={"x": 2}).status_code == 200


def test_a_serving_version_whose_workers_keep_dying_is_rolled_back(
    repo: Path, tmp_path: Path
) -> None:
    good = store_plan(repo, {"do": "echo"}, "m")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "NEXUS_CACHE_DIR": str(tmp_path / "cache"),
    }
    args = [
        *(console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)),
        *("--model-name", "m", "--handler", f"{HANDLERS}:Hostile"),
        *("--poll-interval-s", "0.2", "--canary-percent", "0"),  # promoted at once
    ]
    with run_process(args, base + "/ready", env=env), httpx.Client(base_url=base) as client:
        bad = store_plan(repo, {"do": "segfault_on_request"}, "m")
        deadline = time.monotonic() + 60
        while client.get("/model").json()["commit_hash"] != bad:
            assert time.monotonic() < deadline, "the second version was not promoted"
            time.sleep(0.1)
        fine = client.post("/predict/batch", json={"inputs": [{"n": 1}]})
        assert fine.status_code == 200
        assert fine.json()["model"]["commit_hash"] == bad
        failures = []
        while client.get("/model").json()["commit_hash"] != good:
            assert time.monotonic() < deadline, "the dying version was not rolled back"
            crash = client.post("/predict/batch", json={"inputs": [{"crash": True}]}, timeout=30)
            if crash.status_code == 500:
                failures.append(crash.json()["error"])
            time.sleep(0.05)
        assert len(failures) >= 3
        assert all("SIGSEGV" in failure for failure in failures)
        events = client.get("/deployment").json()["events"]
        rolled = [e for e in events if e["event"] == "rolled_back"]
        assert rolled
        assert rolled[-1]["version"]["commit_hash"] == bad
        assert "workers died" in rolled[-1]["reason"]
        assert "SIGSEGV" in rolled[-1]["reason"]
        assert rolled[-1]["to"]["commit_hash"] == good
        assert client.get("/health").status_code == 200
        again = client.post("/predict/batch", json={"inputs": [{"n": 2}]})
        assert again.json()["model"]["commit_hash"] == good
