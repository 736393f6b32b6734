"""A rollout under steady load through the proxy, and the compose flow, as real processes.

The model server and the proxy run as their console scripts, the load comes from
tests/harness/open_loop.py in a process of its own, and the test is the team (it promotes
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
from typing import Any

import httpx
import pytest

from control_plane import Registry
from tests.conftest import commit_all, make_repo
from tests.harness.faults import HANDLER, store_version
from tests.harness.models import make_torchscript
from tests.harness.open_loop import Answer, read_answers
from tests.harness.servers import console_script, free_port, run_process
from tests.other_user import NOBODY, as_nobody, python_as_nobody, why_not

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
        sys.executable, "-m", "tests.harness.open_loop", "--url", url, "--rate", str(RATE),
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


@pytest.mark.alone  # its p99 during a rollout against its own steady p99: no neighbours
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


def server_as_nobody(shared_tmp: Path, model: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run the model server as the image does, under another uid than the CLI's (root here:
    nobody), with its own home and cache; {} where this process cannot switch users."""
    reason = why_not()
    if reason is not None:
        print(f"the model server runs as this user, not another uid: {reason}")
        return {}
    model[:1] = python_as_nobody("model_server")
    home = shared_tmp / "server-home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    env.update(HOME=str(home), NEXUS_CACHE_DIR=str(home / "cache"))
    # As the image's `git config --system safe.directory '*'`: the workspace is not its own.
    env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
    env["COVERAGE_FILE"] = str(home / ".coverage")
    return as_nobody()


def nexus_store(repo: Path, model: Path, env: dict[str, str], umask: int = 0o022) -> None:
    stored = subprocess.run(
        [console_script("nexus"), "store", str(model), "my_model"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        umask=umask,
    )
    assert stored.returncode == 0, stored.stderr
    commit_all(repo, "Store my_model")


def predict_until_ok(proxy_url: str, trained: str | None = None) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        reply = httpx.post(proxy_url + "/predict", json={"input": [0.0] * 4}, timeout=30)
        served = reply.json().get("model", {}).get("commit_hash") if reply.is_success else None
        if reply.status_code == 200 and trained in (None, served):
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"not served within 60 s: {reply.status_code} {reply.text}")
        time.sleep(0.2)


async def test_compose_flow_empty_workspace_then_store_then_predict(
    shared_tmp: Path, moto_url: str, s3_bucket: str
) -> None:
    """`docker compose up -d` on a new project, then `nexus store` and a commit: no restarts.

    The CLI runs as this user and the model server as another (the image's uid is not the
    host's): what the CLI writes must be readable by it. A metadata file written by a CLI
    whose umask is 077 is not: the server says why, and serves it once it is fixed."""
    repo = make_repo(shared_tmp / "project")
    (repo / "train.py").write_text("print('training')\n")
    commit_all(repo, "initial")
    s3 = {
        "NEXUS_PROVIDER": "s3",
        "NEXUS_BUCKET": s3_bucket,
        "NEXUS_ENDPOINT_URL": moto_url,
        "NEXUS_REGION": "us-east-1",
    }
    server_env = dict(os.environ, **s3, NEXUS_MODEL_NAME="my_model", NEXUS_POLL_INTERVAL_S="0.3")
    server_env.update(NEXUS_CANARY_PERCENT="0", NEXUS_CACHE_DIR=str(shared_tmp / "cache"))
    model, proxy, model_url, proxy_url = commands(repo)
    other_uid = server_as_nobody(shared_tmp, model, server_env)
    with (
        run_process(model, model_url + "/health", env=server_env, **other_uid),
        run_process(proxy, proxy_url + "/health"),
    ):
        waiting = httpx.get(model_url + "/ready", timeout=10)
        assert waiting.status_code == 503
        assert waiting.json() == {"error": "no version of my_model is stored yet"}
        early = httpx.post(proxy_url + "/predict", json={"input": [0.0] * 4}, timeout=30)
        assert early.status_code == 503, early.text  # as the docs say: not ready yet
        assert "no version of my_model is stored yet" in early.json()["error"]
        assert early.headers["retry-after"] == "1"

        make_torchscript(shared_tmp / "model.pt")
        nexus_store(repo, shared_tmp / "model.pt", dict(os.environ, **s3))
        reply = predict_until_ok(proxy_url)
        assert reply.json()["model"]["name"] == "my_model"
        assert len(reply.json()["output"]) == 3

        if not other_uid:
            return  # the rest needs a server that cannot read a file the CLI wrote 0600
        (repo / "train.py").write_text("print('training again')\n")
        trained = commit_all(repo, "train again")
        make_torchscript(shared_tmp / "model2.pt")
        nexus_store(repo, shared_tmp / "model2.pt", dict(os.environ, **s3), umask=0o077)
        deadline = time.monotonic() + 30
        while True:
            state = httpx.get(model_url + "/deployment", timeout=10).json()
            if state["waiting"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert state["waiting"]["event"] == "metadata_unreadable", state
        assert "Permission denied" in state["waiting"]["reason"]
        assert httpx.get(model_url + "/health", timeout=10).status_code == 200
        assert httpx.get(model_url + "/ready", timeout=10).status_code == 200  # v1 goes on

        (repo / ".nexus_meta.json").chmod(0o644)
        served = predict_until_ok(proxy_url, trained)
        assert served.json()["model"]["commit_hash"] == trained
        assert httpx.get(model_url + "/deployment", timeout=10).json()["waiting"] is None
