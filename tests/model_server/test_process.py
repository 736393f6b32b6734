"""`nexus-model-server` as a real process."""

from __future__ import annotations

import os
import subprocess

import httpx

from control_plane import Registry
from tests.harness.servers import console_script, free_port, run_process


def test_model_server_process(stored, repo, tmp_path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, NEXUS_MODEL_NAME="mlp_onnx", NEXUS_CACHE_DIR=str(tmp_path / "c"))
    cmd = [console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)]
    with run_process(cmd, base + "/ready", env=env) as proc:
        inputs = [{"input": [0.5, -0.5, 1.0, 2.0]}] * 3
        reply = httpx.post(base + "/predict/batch", json={"inputs": inputs}, timeout=30)
        assert reply.status_code == 200
        assert len(reply.json()["outputs"]) == 3
        metrics = httpx.get(base + "/metrics", timeout=10).text
        assert "nexus_model_items_total 3.0" in metrics
        proc.terminate()
        assert proc.wait(30) == 0


def test_model_server_exits_non_zero_when_the_version_cannot_load(repo, tmp_path) -> None:
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    Registry(repo).store(tmp_path / "junk.bin", "junk")
    done = subprocess.run(
        [
            console_script("nexus-model-server"),
            "--port",
            str(free_port()),
            "--repo",
            str(repo),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "is not a format the server knows" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_whose_ref_resolves_to_nothing_starts_and_waits(repo, tmp_path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)]
    env = dict(os.environ, NEXUS_MODEL_NAME="ghost", NEXUS_MODEL_REF="production")
    with run_process(cmd, base + "/health", env=env):
        ready = httpx.get(base + "/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json() == {"error": "no version of ghost is in production yet"}
        v2_ready = httpx.get(base + "/v2/models/ghost/ready", timeout=10)
        assert v2_ready.status_code == 503  # waiting, not an unknown model
        assert v2_ready.json()["error"] == "no version of ghost is in production yet"
        batch = httpx.post(base + "/predict/batch", json={"inputs": [1]}, timeout=10)
        assert batch.status_code == 503
