"""One model server, several models (`--models`), and a proxy in front that shares it.

Both are real processes; the models are a TorchScript MLP and a TorchScript CNN stored in
one real Git repository. Each model has its own route, rollout, metrics and readiness.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton

from control_plane import Registry
from tests.conftest import commit_all
from tests.harness.models import make_cnn, make_torchscript
from tests.harness.servers import console_script, free_port, run_process


def test_a_server_of_two_models_behind_a_shared_proxy(repo: Path, tmp_path: Path) -> None:
    make_torchscript(tmp_path / "mlp.pt")
    make_cnn(tmp_path / "cnn.pt")
    registry = Registry(repo)
    registry.store(tmp_path / "mlp.pt", "mlp")
    registry.store(tmp_path / "cnn.pt", "vision")
    commit_all(repo, "store two models")
    server_port, proxy_port = free_port(), free_port()
    server, proxy = f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{proxy_port}"
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"))
    serve = [console_script("nexus-model-server"), "--port", str(server_port)]
    serve += ["--repo", str(repo), "--models", "mlp:latest,vision"]
    front = [console_script("nexus-proxy"), "--port", str(proxy_port), "--upstream", server]
    with run_process(serve, server + "/ready", env=env), run_process(front, proxy + "/ready"):
        ready = httpx.get(server + "/ready").json()
        assert set(ready["models"]) == {"mlp", "vision"}
        row = {"input": [0.5, -0.5, 1.0, 2.0]}
        image = {"input": np.zeros((3, 16, 16)).tolist()}
        default = httpx.post(server + "/predict", json=row, timeout=30)
        assert default.json()["model"]["name"] == "mlp"
        for base in (server, proxy):  # the proxy names the model in the shared server's path
            mlp = httpx.post(base + "/models/mlp/predict", json=row, timeout=30)
            vision = httpx.post(base + "/models/vision/predict", json=image, timeout=30)
            assert mlp.status_code == vision.status_code == 200, (mlp.text, vision.text)
            assert mlp.json()["model"]["name"] == "mlp"
            assert vision.json()["model"]["name"] == "vision"
            assert len(vision.json()["output"]) == 5
        missing = httpx.post(server + "/models/nope/predict", json=row)
        assert missing.status_code == 404
        assert "it serves mlp, vision" in missing.json()["error"]
        client = triton.InferenceServerClient(f"127.0.0.1:{proxy_port}")
        batch = np.zeros((2, 3, 16, 16), dtype=np.float32)
        request = triton.InferInput("input", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch, binary_data=True)
        assert client.infer("vision", [request]).as_numpy("output").shape == (2, 5)
        assert client.is_model_ready("mlp")
        metrics = httpx.get(server + "/metrics").text
        assert 'nexus_model_items_total{model="mlp"}' in metrics
        assert 'nexus_model_items_total{model="vision"}' in metrics
        deployment = httpx.get(server + "/deployment", params={"model": "vision"}).json()
        assert deployment["events"][-1]["event"] == "serving"


def test_bad_models_setting_is_one_sentence(repo: Path) -> None:
    done = subprocess.run(
        [console_script("nexus-model-server"), "--repo", str(repo), "--models", "a:latest,a"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "a is named twice" in done.stderr
    assert "Traceback" not in done.stderr
