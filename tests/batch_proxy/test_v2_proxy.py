"""The Open Inference Protocol through the proxy, spoken by the stock Triton client.

`nexus-proxy` and `nexus-model-server` run as real processes; the server serves a
TorchScript CNN stored in a real Git repository. Concurrent callers' tensors are
batched along the first dimension and sliced back: every caller gets exactly what
calling the model alone would give, and requests of different shapes never share a batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from control_plane import Registry
from tests.conftest import commit_all
from tests.harness.models import make_cnn
from tests.harness.servers import server_and_proxy


@pytest.fixture
def stack(repo: Path, tmp_path: Path) -> Iterator[tuple[str, torch.jit.ScriptModule]]:
    """The model server (token-guarded) and the proxy in front of it: the proxy's address."""
    module = make_cnn(tmp_path / "cnn.pt")
    Registry(repo).store(tmp_path / "cnn.pt", "vision")
    commit_all(repo, "store vision")
    with server_and_proxy(repo, tmp_path / "cache") as (address, _):
        yield address, module


def images(n: int, seed: int, side: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, side, side)).astype(np.float32)


def call(address: str, batch: np.ndarray, binary: bool) -> np.ndarray:
    client = triton.InferenceServerClient(address)
    request = triton.InferInput("input", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch, binary_data=binary)
    outputs = [triton.InferRequestedOutput("output", binary_data=binary)]
    return client.infer("vision", [request], outputs=outputs).as_numpy("output")


def direct(module: torch.jit.ScriptModule, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_one_caller_gets_what_the_model_gives(
    stack: tuple[str, torch.jit.ScriptModule], binary: bool
) -> None:
    address, module = stack
    batch = images(1, seed=1)
    np.testing.assert_allclose(
        call(address, batch, binary), direct(module, batch), rtol=1e-5, atol=1e-6
    )


def test_concurrent_mixed_callers_are_batched_and_sliced_back(
    stack: tuple[str, torch.jit.ScriptModule],
) -> None:
    address, module = stack
    # 48 callers: 1 to 3 rows each, binary and JSON, two image sizes that cannot stack
    work = [(images(1 + i % 3, seed=i, side=32 if i % 4 else 16), i % 2 == 0) for i in range(48)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda w: call(address, *w), work))
    for (batch, _), answer in zip(work, answers, strict=True):
        np.testing.assert_allclose(answer, direct(module, batch), rtol=1e-5, atol=1e-6)
    metrics = httpx.get(f"http://{address}/metrics").text
    batches = float(re.search(r"nexus_proxy_batch_size_count (\S+)", metrics).group(1))  # type: ignore[union-attr]
    rows = float(re.search(r"nexus_proxy_batch_size_sum (\S+)", metrics).group(1))  # type: ignore[union-attr]
    assert rows == sum(len(b) for b, _ in work)
    assert batches < len(work)  # callers shared batches


def test_v2_metadata_readiness_and_bad_requests(stack: tuple[str, torch.jit.ScriptModule]) -> None:
    address, _ = stack
    client = triton.InferenceServerClient(address)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("vision")
    assert client.get_model_metadata("vision")["inputs"][0]["name"] == "input"
    image = triton.InferInput("input", [1, 3, 8, 8], "FP32")
    image.set_data_from_numpy(images(1, seed=5, side=8), binary_data=True)
    assert client.infer("vision", [image], priority=1).as_numpy("output").shape == (1, 5)
    with pytest.raises(triton.InferenceServerException, match="priority must be"):
        client.infer("vision", [image], priority=9)
    base = f"http://{address}"
    ragged = {
        "inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.0] * 5}]
    }
    reply = httpx.post(base + "/v2/models/vision/infer", json=ragged)
    assert reply.status_code == 400
    assert "has 5 values for shape [1, 3, 2, 2], which needs 12" in reply.json()["error"]
    too_many = {
        "inputs": [{"name": "input", "shape": [40, 1], "datatype": "FP32", "data": [0.0] * 40}]
    }
    reply = httpx.post(base + "/v2/models/vision/infer", json=too_many)
    assert reply.status_code == 400
    assert "at most 32 rows a request" in reply.json()["error"]
    assert httpx.post(base + "/v2/models/vision/infer", content=b"{").status_code == 400
