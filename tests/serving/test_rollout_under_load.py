"""A rollout under steady load through the proxy, and the compose flow, as real processes.

The model server and the proxy run as their console scripts, the load comes from
bench/open_loop.py in a process of its own, and the test is the team (it promotes
with the real registry while the load runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.open_loop import Answer, read_answers
from control_plane import Registry
from tests.conftest import commit_all
from tests.model_server.faults import HANDLER, store_version
from tests.models import make_torchscript
from tests.servers import console_script, free_port, run_process

RATE = 200  # requests/s, open loop
SECONDS = 16.0
STEADY_S = 5.0


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


def version(answer: Answer) -> str | None:
    return str(json.loads(answer.body)["output"]["version"]) if answer.status == 200 else None


async def open_loop(url: str, answers: Path) -> None:
    """RATE evenly spaced requests a second for SECONDS, from a process of their own.

    The generator runs outside this process so that neither coverage's tracing nor
    the promotion done here can delay an arrival: every latency is the servers'.
    """
    generator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.open_loop", "--url", url, "--rate", str(RATE),
        "--duration", str(SECONDS), "--arrivals", "uniform", "--answers", str(answers),
        cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(generator.wait(), SECONDS + 30) == 0


def commands(repo: Path) -> tuple[list[str], list[str], str, str]:
    """The model server and the proxy, started as docker-compose.yml starts them."""
    model_port, proxy_port = free_port(), free_port()
    model_url, proxy_url = f"http://127.0.0.1:{model_port}", f"http://127.0.0.1:{proxy_port}"
    model = [console_script("nexus-model-server"), "--host", "127.0.0.1"]
    model += ["--port", str(model_port), "--repo", str(repo)]
    proxy = [console_script("nexus-proxy"), "--host", "127.0.0.1", "--port", str(proxy_port)]
    proxy += ["--upstream", model_url]
    return model, proxy, model_url, proxy_url


async def test_promoting_a_version_under_load_loses_nothing(repo: Path, tmp_path: Path) -> None:
    v1 = store_version(repo, name="v1", batch_ms=10)
    v2 = store_version(repo, name="v2", batch_ms=10)
    Registry(repo).promote(v1.short_hash, "svc", "production")
    handler = {"NEXUS_HANDLER": HANDLER, "PYTHONPATH": str(Path(__file__).parents[2])}
    env = dict(os.environ, **handler, NEXUS_MODEL_NAME="svc", NEXUS_MODEL_REF="production")
    env.update(NEXUS_POLL_INTERVAL_S="0.2", NEXUS_CACHE_DIR=str(tmp_path / "cache"))
    env.update(NEXUS_CANARY_PERCENT="50", NEXUS_CANARY_MIN_ITEMS="100", NEXUS_CANARY_MIN_S="4")
    model, proxy, model_url, proxy_url = commands(repo)
    with (
        run_process(model, model_url + "/ready", env=env),
        run_process(proxy, proxy_url + "/ready"),
    ):
        record = tmp_path / "answers.jsonl"
        load = asyncio.get_running_loop().create_task(open_loop(proxy_url + "/predict", record))
        await asyncio.sleep(STEADY_S)
        changed_at = time.monotonic()
        # Promoted in this process (a CLI process would add its start-up to the 2 busy cores).
        await asyncio.to_thread(Registry(repo).promote, v2.short_hash, "svc", "production")
        async with httpx.AsyncClient(base_url=model_url, timeout=10) as client:
            while True:
                log = (await client.get("/deployment")).json()["events"]
                if log[-1]["event"] in ("promoted", "rolled_back"):
                    break
                assert time.monotonic() - changed_at < SECONDS - STEADY_S, log
                await asyncio.sleep(0.05)
        done_at = time.monotonic()
        await load
    answers = read_answers(record)
    assert log[-1]["event"] == "promoted", log
    assert [a.status for a in answers if a.status != 200] == []
    assert {version(a) for a in answers} == {"v1", "v2"}
    steady = [a.latency for a in answers if a.due < changed_at]
    rollout = [a.latency for a in answers if changed_at <= a.due <= done_at]
    after = [a for a in answers if a.due > done_at + 0.1]
    assert len(after) > RATE  # a second and more of traffic after the rollout
    assert {version(a) for a in after} == {"v2"}
    assert p99(rollout) <= 1.5 * p99(steady), (p99(steady), p99(rollout))


async def test_compose_flow_empty_workspace_then_store_then_predict(
    repo: Path, tmp_path: Path, moto_url: str, s3_bucket: str
) -> None:
    """`docker compose up -d` on a new project, then `nexus store` and a commit: no restarts."""
    s3 = {
        "NEXUS_PROVIDER": "s3",
        "NEXUS_BUCKET": s3_bucket,
        "NEXUS_ENDPOINT_URL": moto_url,
        "NEXUS_REGION": "us-east-1",
    }
    server_env = dict(os.environ, **s3, NEXUS_MODEL_NAME="my_model", NEXUS_POLL_INTERVAL_S="0.3")
    server_env["NEXUS_CACHE_DIR"] = str(tmp_path / "cache")
    model, proxy, model_url, proxy_url = commands(repo)
    with (
        run_process(model, model_url + "/health", env=server_env),
        run_process(proxy, proxy_url + "/health"),
    ):
        waiting = httpx.get(model_url + "/ready", timeout=10)
        assert waiting.status_code == 503
        assert waiting.json() == {"error": "no version of my_model is stored yet"}
        early = httpx.post(proxy_url + "/predict", json={"input": [0.0] * 4}, timeout=30)
        assert early.status_code >= 500
        assert "error" in early.json()

        make_torchscript(tmp_path / "model.pt")
        stored = subprocess.run(
            [console_script("nexus"), "store", str(tmp_path / "model.pt"), "my_model"],
            cwd=repo,
            env=dict(os.environ, **s3),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stored.returncode == 0, stored.stderr
        commit_all(repo, "Store my_model")
        deadline = time.monotonic() + 60
        while True:
            reply = httpx.post(proxy_url + "/predict", json={"input": [0.0] * 4}, timeout=30)
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"]["name"] == "my_model"
        assert len(reply.json()["output"]) == 3
