"""`nexus serve` end to end: S3 (moto over HTTP) -> model server -> proxy -> 100 clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from batch_proxy.policies import POLICIES
from control_plane import Registry
from control_plane.cli.serve import ProxyPolicy
from tests.conftest import commit_all
from tests.harness.models import IN_FEATURES, make_torchscript
from tests.harness.servers import console_script, free_port
from tests.storage.conftest import backend_config
from tests.storage.test_cloud_flow import nexusrc


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def metric(text: str, pattern: str) -> float:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return float(found.group(1))


async def predict_all(url: str, inputs: np.ndarray) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(url, json={"input": row.tolist()}) for row in inputs)
        )


@contextlib.contextmanager
def serve_process(
    repo: Path, env: dict[str, str], port: int, model_port: int
) -> Iterator[subprocess.Popen[str]]:
    """`nexus serve` in the repo, its output on a pipe; killed if a test leaves it running."""
    proc = subprocess.Popen(
        [console_script("nexus"), "serve", "--port", str(port), "--model-port", str(model_port)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def banner(proc: subprocess.Popen[str]) -> str:
    """`nexus serve`'s output up to its "Press Ctrl-C" line (both servers up)."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line or proc.poll() is not None:
            break
    output = "".join(lines)
    assert "Press Ctrl-C" in output, output
    return output


@pytest.mark.alone  # asserts that 100 callers shared batches: no neighbours slowing them
@pytest.mark.parametrize("store", ["s3", "azure"])
def test_nexus_serve_end_to_end_from_a_cloud_store(
    request: pytest.FixtureRequest, store: str, repo: Path, tmp_path: Path
) -> None:
    """S3 (moto) or Azure Blob Storage (Azurite) -> model server -> proxy -> 100 clients."""
    (repo / ".nexusrc").write_text(nexusrc(backend_config(request, store)))
    commit_all(repo, f"use {store}")
    model = make_torchscript(tmp_path / "mlp.pt")
    Registry(repo).store(tmp_path / "mlp.pt", "e2e")
    port, model_port = free_port(), free_port()
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"))
    with serve_process(repo, env, port, model_port) as proc:
        output = banner(proc)
        curl = re.search(r"curl -s (\S+) .* -d '(.+)'", output)
        assert curl is not None
        assert httpx.post(curl.group(1), content=curl.group(2), timeout=30).status_code == 200

        inputs = np.random.default_rng(0).standard_normal((100, IN_FEATURES)).astype(np.float32)
        replies = asyncio.run(predict_all(f"http://127.0.0.1:{port}/predict", inputs))
        with torch.inference_mode():
            expected = model(torch.from_numpy(inputs)).numpy()
        for reply, want in zip(replies, expected, strict=True):
            assert reply.status_code == 200
            np.testing.assert_allclose(reply.json()["output"], want, rtol=1e-5, atol=1e-6)

        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        count = metric(metrics, r"nexus_proxy_batch_size_count (\S+)")
        singles = metric(metrics, r'nexus_proxy_batch_size_bucket\{le="1.0"\} (\S+)')
        assert count > singles  # some batches held more than one item
        assert count < 100

        kids = children_of(proc.pid)
        assert len(kids) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not any(alive(pid) for pid in kids)


def serve_once(repo: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            console_script("nexus"),
            "serve",
            "--port",
            str(free_port()),
            "--model-port",
            str(free_port()),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_nexus_serve_with_nothing_stored_waits_then_serves(repo: Path, tmp_path: Path) -> None:
    port, model_port = free_port(), free_port()
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"), NEXUS_POLL_INTERVAL_S="0.3")
    with serve_process(repo, env, port, model_port) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Waiting for a version" in line or proc.poll() is not None:
                break
        assert "Waiting for a version: no version of any model is stored yet." in "".join(lines)
        make_torchscript(tmp_path / "mlp.pt")
        Registry(repo).store(tmp_path / "mlp.pt", "late")
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line or proc.poll() is not None:
                break
        assert "Serving late@" in "".join(lines)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/predict", json={"input": [0.0] * IN_FEATURES}, timeout=30
        )
        assert reply.status_code == 200
        assert reply.json()["model"]["name"] == "late"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_nexus_serve_reports_a_model_server_that_cannot_start(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    Registry(repo).store(tmp_path / "junk.bin", "junk")
    done = serve_once(repo, dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache")))
    assert done.returncode == 1
    assert "the model server exited with code 1" in done.stderr
    assert "not a format the server knows" in done.stderr


def test_nexus_serve_names_the_proxys_policies_and_refuses_others(repo: Path) -> None:
    """`nexus serve` imports no server: its --policy choices are the proxy's, held equal here."""
    assert tuple(policy.value for policy in ProxyPolicy) == tuple(POLICIES)
    done = subprocess.run(
        [console_script("nexus"), "serve", "--policy", "fastest"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2  # a usage error, before anything starts
    assert "'fastest' is not one of 'adaptive', 'eager', 'fixed'" in done.stderr


async def all_arrived(client: httpx.AsyncClient, metrics_url: str, count: int) -> None:
    """Wait until the proxy holds every request (queued, or sent in a batch): a fixed sleep
    is too short on a loaded machine, and a request not yet accepted is no test of draining."""
    for _ in range(200):
        text = (await client.get(metrics_url)).text
        values = dict(
            line.rsplit(" ", 1)
            for line in text.splitlines()
            if line.startswith(
                ("nexus_proxy_queue_depth ", "nexus_proxy_queue_wait_seconds_count ")
            )
        )
        seen = sum(float(v) for v in values.values())
        if seen >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the proxy saw {seen:.0f} of {count} requests")


def test_ctrl_c_drains_the_proxy_before_the_model_server_stops(repo: Path, tmp_path: Path) -> None:
    # Issue 10: Ctrl-C reaches the terminal's whole foreground group. The children run in
    # sessions of their own, so only `nexus serve` sees it and stops the proxy first.
    (tmp_path / "weights.bin").write_bytes(b"any bytes: the handler ignores them")
    Registry(repo).store(tmp_path / "weights.bin", "slow")
    port, model_port = free_port(), free_port()
    root = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ,
        NEXUS_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(root),
        SLOW_ECHO_SECONDS="0.3",
        NEXUS_WORKER_ENV="SLOW_ECHO_SECONDS",  # the workers get no other variable
    )
    handler = "tests.model_server.handlers:SlowEcho"
    proc = subprocess.Popen(
        [
            *(console_script("nexus"), "serve", "--port", str(port)),
            *("--model-port", str(model_port), "--handler", handler, "--policy", "fixed"),
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Press Ctrl-C" in line or proc.poll() is not None:
                break

        async def load_then_interrupt() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                url = f"http://127.0.0.1:{port}/predict"
                sent = [asyncio.create_task(client.post(url, json={"n": i})) for i in range(100)]
                await all_arrived(client, f"http://127.0.0.1:{port}/metrics", 100)
                os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
                return await asyncio.gather(*sent)

        replies = asyncio.run(load_then_interrupt())
        assert [r.status_code for r in replies] == [200] * 100
        assert [r.json()["output"] for r in replies] == [{"n": i} for i in range(100)]
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_kill_9_of_nexus_serve_takes_its_servers_down_with_it(repo: Path, tmp_path: Path) -> None:
    """A supervisor killed outright (OOM killer, kill -9) leaves no server holding a port:
    a second `nexus serve` on the same ports starts."""
    make_torchscript(tmp_path / "mlp.pt")
    Registry(repo).store(tmp_path / "mlp.pt", "orphans")
    port, model_port = free_port(), free_port()
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"))
    with serve_process(repo, env, port, model_port) as proc:
        banner(proc)
        kids = children_of(proc.pid)
        assert len(kids) == 2
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in kids)
    with serve_process(repo, env, port, model_port) as again:
        banner(again)
        url = f"http://127.0.0.1:{port}/predict"
        assert httpx.post(url, json={"input": [0.0] * 4}, timeout=30).status_code == 200
        again.send_signal(signal.SIGTERM)
        assert again.wait(60) == 0
