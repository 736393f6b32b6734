"""The Open Inference Protocol on the model server, spoken by the stock Triton client.

`tritonclient.http` (nobody here wrote it) builds the requests and parses the answers,
JSON and binary, against `nexus-model-server` as a real process serving a TorchScript
image model (a small CNN) stored in a real Git repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from control_plane import Registry
from nexus_common import v2wire
from tests.conftest import commit_all
from tests.harness.models import make_cnn
from tests.harness.servers import console_script, free_port, run_process


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.jit.ScriptModule]:
    path = tmp_path_factory.mktemp("cnn") / "cnn.pt"
    return path, make_cnn(path)


@pytest.fixture
def server(repo: Path, cnn: tuple[Path, torch.jit.ScriptModule], tmp_path: Path) -> Iterator[str]:
    Registry(repo).store(cnn[0], "vision")
    commit_all(repo, "store vision")
    port = free_port()
    base = f"127.0.0.1:{port}"
    env = dict(os.environ, NEXUS_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)]
    with run_process(cmd, f"http://{base}/v2/health/ready", env=env):
        yield base


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def expected(module: torch.jit.ScriptModule, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("size", [1, 4])
def test_triton_client_infer_matches_the_model(
    server: str, cnn: tuple[Path, torch.jit.ScriptModule], binary: bool, size: int
) -> None:
    client = triton.InferenceServerClient(server)
    batch = images(size)
    request = triton.InferInput("input", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch, binary_data=binary)
    wanted = triton.InferRequestedOutput("output", binary_data=binary)
    result = client.infer("vision", [request], outputs=[wanted])
    np.testing.assert_allclose(result.as_numpy("output"), expected(cnn[1], batch), rtol=1e-5)
    assert result.get_response()["model_name"] == "vision"


def test_metadata_readiness_and_errors(server: str) -> None:
    client = triton.InferenceServerClient(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("vision")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("vision")
    assert metadata["inputs"][0]["name"] == "input"
    assert metadata["inputs"][0]["datatype"] == "FP32"
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    wrong = triton.InferInput("pixels", [1, 3, 32, 32], "FP32")
    wrong.set_data_from_numpy(images(1))
    with pytest.raises(
        InferenceServerException, match="the model has no input 'pixels'; it takes 'input'"
    ):
        client.infer("vision", [wrong])
    header = (
        b'{"inputs":[{"name":"input","shape":[1,3,32,32],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":12}}]}'
    )
    short = httpx.post(
        f"http://{server}/v2/models/vision/infer",
        content=header + b"\0" * 12,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400
    assert "bytes for shape" in short.json()["error"]
    assert httpx.post(f"http://{server}/v2/models/other/infer", json={}).status_code == 404


def test_the_codec_reads_what_triton_writes_and_writes_what_it_reads() -> None:
    batch = images(2)
    inputs = triton.InferInput("input", list(batch.shape), "FP32")
    inputs.set_data_from_numpy(batch, binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [inputs], [triton.InferRequestedOutput("output", binary_data=True)]
    )
    parsed = v2wire.parse_request(body, str(json_size))
    assert parsed.inputs[0].raw == batch.tobytes()
    assert parsed.wants_binary("output")
    out = np.arange(6, dtype=np.float16).reshape(2, 3)
    tensor = v2wire.Tensor("output", [2, 3], "FP16", raw=out.tobytes())
    for binary in (True, False):
        parsed.outputs[0]["parameters"]["binary_data"] = binary
        encoded, header = v2wire.encode_response("vision", "abc", [tensor], parsed)
        result = triton.InferenceServerClient.parse_response_body(encoded, header_length=header)
        np.testing.assert_array_equal(result.as_numpy("output"), out)


@pytest.mark.parametrize(
    "tensor",
    [
        {"name": "input", "shape": [1], "datatype": ["FP32"], "data": [1.0]},  # unhashable
        {"name": "input", "shape": [1], "datatype": {"FP32": 1}, "data": [1.0]},
        {"name": "input", "shape": [1], "datatype": 32, "data": [1.0]},
        {"name": "input", "shape": [-1], "datatype": "FP32", "data": [1.0]},
        {"name": "", "shape": [1], "datatype": "FP32", "data": [1.0]},
    ],
)
def test_a_malformed_tensor_is_the_callers_error(tensor: dict[str, object]) -> None:
    """Found by schemathesis: a list as the datatype raised TypeError (a 500)."""
    body = orjson.dumps({"inputs": [tensor]})
    with pytest.raises(v2wire.V2Error):
        v2wire.parse_request(body, None)
