"""`nexus-model-server` as a real process."""

from __future__ import annotations

import os
import subprocess

import httpx

from tests.servers import console_script, free_port, run_process


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


def test_model_server_exits_non_zero_when_model_cannot_load(repo, tmp_path) -> None:
    done = subprocess.run(
        [
            console_script("nexus-model-server"),
            "--port",
            str(free_port()),
            "--repo",
            str(repo),
            "--model-name",
            "ghost",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Error: no model named 'ghost' is stored." in done.stderr
    assert "Traceback" not in done.stderr
