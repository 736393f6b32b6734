"""Models of several named inputs and outputs, stored with their signature and served
through the proxy, spoken to by the stock Triton HTTP client.

The model is Triton's own example ("simple"): INT32 `INPUT0` and `INPUT1` [-1, 16] in,
their sum `OUTPUT0` and difference `OUTPUT1` out, an ONNX graph made in the test.
`nexus-model-server` and `nexus-proxy` run as real processes.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from control_plane import Registry
from control_plane.web.settings import RegistrySettings
from model_server.errors import ModelLoadError
from model_server.service import load_model
from model_server.settings import ServerSettings
from model_server.tensors import TensorPredictor
from tests.conftest import commit_all
from tests.harness.models import (
    SUM_DIFF_WIDTH,
    make_dict_torchscript,
    make_needs_nonzero_torchscript,
    make_pair_torchscript,
    make_sum_diff_onnx,
)
from tests.harness.servers import console_script, server_and_proxy
from tests.web.conftest import asgi_client

SUM_DIFF = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [-1, SUM_DIFF_WIDTH]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [-1, SUM_DIFF_WIDTH]},
    ],
    "outputs": [
        {"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, SUM_DIFF_WIDTH]},
        {"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, SUM_DIFF_WIDTH]},
    ],
}


def test_an_onnx_model_is_stored_with_its_signature_without_flags(
    repo: Path, tmp_path: Path
) -> None:
    make_sum_diff_onnx(tmp_path / "simple.onnx")
    entry = Registry(repo).store(tmp_path / "simple.onnx", "simple").entry
    assert entry.tensors == SUM_DIFF


@pytest.mark.parametrize(
    ("make", "arrays", "expected"),
    [
        (
            make_pair_torchscript,
            {"left": np.ones((2, 3), "f4"), "right": np.ones((2, 3), "f4")},
            (["left", "right"], ["output0", "output1"]),
        ),
        (
            make_dict_torchscript,
            {"a": np.ones((2, 5), "f4"), "b": np.ones((2, 5), "f4")},
            (["a", "b"], ["total", "scaled"]),
        ),
    ],
    ids=["tuple", "dict"],
)
def test_a_torchscript_model_is_stored_with_what_its_example_input_shows(
    repo: Path, tmp_path: Path, make, arrays: dict[str, np.ndarray], expected
) -> None:
    make(tmp_path / "model.pt")
    np.savez(tmp_path / "example.npz", *(), **arrays)  # type: ignore[arg-type]
    entry = (
        Registry(repo)
        .store(tmp_path / "model.pt", "pair", example_input=tmp_path / "example.npz")
        .entry
    )
    tensors = entry.tensors
    assert tensors is not None
    assert [t["name"] for t in tensors["inputs"]] == expected[0]
    assert [t["name"] for t in tensors["outputs"]] == expected[1]
    width = next(iter(arrays.values())).shape[1]
    assert all(t["shape"] == [-1, width] and t["datatype"] == "FP32" for t in tensors["inputs"])


async def test_the_signature_is_in_list_json_the_registry_api_and_the_version_page(
    repo: Path, tmp_path: Path
) -> None:
    make_sum_diff_onnx(tmp_path / "simple.onnx")
    Registry(repo).store(tmp_path / "simple.onnx", "simple")
    listed = json.loads(_nexus(repo, "list", "--json").stdout)
    assert listed[0]["tensors"] == SUM_DIFF
    async with asgi_client(RegistrySettings(workspace=repo)) as client:
        api = (await client.get("/api/v1/models/simple/versions/latest")).json()
        assert api["entry"]["tensors"] == SUM_DIFF
        page = (await client.get("/models/simple/versions/latest")).text
    assert "<h2>Signature</h2>" in page
    assert "<td>input</td><td>INPUT1</td><td>INT32</td><td>-1, 16</td>" in page
    assert "<td>output</td><td>OUTPUT1</td><td>INT32</td><td>-1, 16</td>" in page


def test_warm_up_runs_the_proxys_batch_sizes_and_a_failing_one_never_serves(
    repo: Path, tmp_path: Path
) -> None:
    make_pair_torchscript(tmp_path / "pair.pt")
    np.savez(tmp_path / "example.npz", left=np.ones((1, 3), "f4"), right=np.ones((1, 3), "f4"))
    Registry(repo).store(tmp_path / "pair.pt", "pair", example_input=tmp_path / "example.npz")
    settings = ServerSettings(repo=repo, cache_dir=tmp_path / "cache", model_name="pair")
    _, predictor = load_model(settings)
    assert predictor.warmup_seconds > 0
    make_needs_nonzero_torchscript(tmp_path / "picky.pt")
    np.savez(tmp_path / "x.npz", x=np.ones((1, 3), "f4"))
    Registry(repo).store(tmp_path / "picky.pt", "picky", example_input=tmp_path / "x.npz")
    with pytest.raises(ModelLoadError, match=r"failed its warm-up: .*an all-zero batch"):
        load_model(ServerSettings(repo=repo, cache_dir=tmp_path / "cache", model_name="picky"))


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_a_torchscript_model_of_two_tensors_is_served_by_name(
    repo: Path, tmp_path: Path, kind: str
) -> None:
    left = np.arange(6, dtype="f4").reshape(2, 3)
    right = np.full((2, 3), 2.0, "f4")
    if kind == "tuple":
        make_pair_torchscript(tmp_path / "m.pt")
        inputs, expected = {"left": left, "right": right}, {"output0": left + right}
        expected["output1"] = left * right
    else:
        make_dict_torchscript(tmp_path / "m.pt")
        inputs, expected = {"a": left, "b": right}, {"total": left + right, "scaled": left * 2}
    np.savez(tmp_path / "example.npz", *(), **inputs)  # type: ignore[arg-type]
    Registry(repo).store(tmp_path / "m.pt", "m", example_input=tmp_path / "example.npz")
    settings = ServerSettings(repo=repo, cache_dir=tmp_path / "cache", model_name="m")
    _, predictor = load_model(settings)
    assert isinstance(predictor, TensorPredictor)
    outputs = predictor.run_named(inputs)
    assert set(outputs) == set(expected)
    for name, array in expected.items():
        np.testing.assert_allclose(outputs[name], array)
    items = [{name: array[row].tolist() for name, array in inputs.items()} for row in range(2)]
    answers = predictor.predict(items)
    assert answers[1] == {name: array[1].tolist() for name, array in expected.items()}


def test_a_signature_that_contradicts_the_model_is_refused_and_nothing_is_stored(
    repo: Path, tmp_path: Path
) -> None:
    make_sum_diff_onnx(tmp_path / "simple.onnx")
    wrong = json.loads(json.dumps(SUM_DIFF))
    wrong["inputs"][1]["datatype"] = "FP32"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    done = _nexus(
        repo, "store", tmp_path / "simple.onnx", "simple", "--signature", tmp_path / "wrong.json"
    )
    assert done.returncode == 2
    assert "input 'INPUT1' is FP32 in the signature but INT32 in the model" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (repo / ".nexus_meta.json").exists()
    assert not list((repo / ".nexus").rglob("*.onnx"))  # no object either
    renamed = json.loads(json.dumps(SUM_DIFF))
    renamed["outputs"][0]["name"] = "SUM"
    (tmp_path / "renamed.yaml").write_text(json.dumps(renamed))  # YAML reads JSON too
    done = _nexus(
        repo, "store", tmp_path / "simple.onnx", "simple", "--signature", tmp_path / "renamed.yaml"
    )
    assert done.returncode == 2
    assert "the model has no output 'SUM'" in done.stderr


def _nexus(repo: Path, *args: object) -> subprocess.CompletedProcess[str]:
    import subprocess

    return subprocess.run(
        [console_script("nexus"), *map(str, args)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The model server (token-guarded) serving `simple` and the proxy in front of it:
    (the proxy's address, the server's URL)."""
    root = tmp_path_factory.mktemp("multi")
    repo = root / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.name", "T"], ["config", "user.email", "t@x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    make_sum_diff_onnx(root / "simple.onnx")
    (repo / ".gitignore").write_text(".nexus/\n")
    commit_all(repo, "start")
    Registry(repo).store(root / "simple.onnx", "simple")
    commit_all(repo, "store simple")
    flags = ("--policy", "fixed", "--max-wait-ms", "20")
    with server_and_proxy(repo, root / "cache", flags) as stack:
        yield stack


def _pair(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (rows, SUM_DIFF_WIDTH)
    return (
        rng.integers(-1000, 1000, shape, dtype=np.int32),
        rng.integers(-1000, 1000, shape, dtype=np.int32),
    )


def _infer(
    client: triton.InferenceServerClient,
    a: np.ndarray,
    b: np.ndarray,
    binary: tuple[bool, bool] = (True, False),
    outputs: tuple[tuple[str, bool], ...] | None = (("OUTPUT0", True), ("OUTPUT1", False)),
) -> triton.InferResult:
    first = triton.InferInput("INPUT0", list(a.shape), "INT32")
    first.set_data_from_numpy(a, binary_data=binary[0])
    second = triton.InferInput("INPUT1", list(b.shape), "INT32")
    second.set_data_from_numpy(b, binary_data=binary[1])
    asked = (
        None
        if outputs is None
        else [triton.InferRequestedOutput(name, binary_data=raw) for name, raw in outputs]
    )
    return client.infer("simple", [first, second], outputs=asked)


def test_metadata_lists_both_inputs_and_both_outputs(stack: tuple[str, str]) -> None:
    metadata = triton.InferenceServerClient(stack[0]).get_model_metadata("simple")
    assert metadata["inputs"] == SUM_DIFF["inputs"]
    assert metadata["outputs"] == SUM_DIFF["outputs"]
    config = triton.InferenceServerClient(stack[0]).get_model_config("simple")
    assert [t["name"] for t in config["input"]] == ["INPUT0", "INPUT1"]
    assert config["input"][0] == {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16]}
    assert config["max_batch_size"] >= 32
    assert config["instance_group"][0]["count"] >= 1


def test_json_and_binary_inputs_and_outputs_in_one_request(stack: tuple[str, str]) -> None:
    client = triton.InferenceServerClient(stack[0])
    a, b = _pair(3, seed=1)
    result = _infer(client, a, b, binary=(False, True))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    only_sum = _infer(client, a, b, outputs=(("OUTPUT0", False),))
    np.testing.assert_array_equal(only_sum.as_numpy("OUTPUT0"), a + b)
    assert only_sum.as_numpy("OUTPUT1") is None
    every = _infer(client, a, b, outputs=None)  # none named: all of them
    np.testing.assert_array_equal(every.as_numpy("OUTPUT1"), a - b)


def test_64_concurrent_callers_are_batched_and_each_gets_its_rows(stack: tuple[str, str]) -> None:
    address, server = stack
    before = triton.InferenceServerClient(address).get_inference_statistics("simple")

    def one(seed: int) -> bool:
        client = triton.InferenceServerClient(address)
        a, b = _pair(1 + seed % 3, seed)
        result = _infer(client, a, b, binary=(seed % 2 == 0, seed % 3 == 0))
        return bool(
            np.array_equal(result.as_numpy("OUTPUT0"), a + b)
            and np.array_equal(result.as_numpy("OUTPUT1"), a - b)
        )

    with ThreadPoolExecutor(64) as pool:
        assert all(pool.map(one, range(64)))
    stats = triton.InferenceServerClient(address).get_inference_statistics("simple")
    model, earlier = stats["model_stats"][0], before["model_stats"][0]
    rows = sum(1 + seed % 3 for seed in range(64))
    assert model["inference_count"] - earlier["inference_count"] == rows
    executions = model["execution_count"] - earlier["execution_count"]
    assert executions < 64  # requests shared batches
    assert (
        model["inference_stats"]["success"]["count"]
        - earlier["inference_stats"]["success"]["count"]
        == executions
    )
    sizes = httpx.get(server + "/metrics", timeout=10).text
    bigger = [
        line
        for line in sizes.splitlines()
        if line.startswith("nexus_model_batch_size_count")
        or line.startswith("nexus_model_batch_size_sum")
    ]
    counts = {line.split(" ")[0]: float(line.split(" ")[1]) for line in bigger}
    assert (
        counts["nexus_model_batch_size_sum"] > counts["nexus_model_batch_size_count"]
    )  # > 1 a batch


@pytest.mark.parametrize(
    ("name", "datatype", "message"),
    [
        ("INPUT9", "INT32", "the model has no input 'INPUT9'"),
        ("INPUT1", "FP32", "input 'INPUT1' is FP32; the model takes INT32 [-1, 16]"),
    ],
)
def test_a_wrong_input_name_or_datatype_is_a_400_naming_it(
    stack: tuple[str, str], name: str, datatype: str, message: str
) -> None:
    client = triton.InferenceServerClient(stack[0])
    a, _ = _pair(2, seed=3)
    first = triton.InferInput("INPUT0", list(a.shape), "INT32")
    first.set_data_from_numpy(a)
    second = triton.InferInput(name, list(a.shape), datatype)
    second.set_data_from_numpy(a.astype(np.float32 if datatype == "FP32" else np.int32))
    batches = _proxy_batches(stack[0])
    with pytest.raises(InferenceServerException, match=re.escape(message)) as raised:
        client.infer("simple", [first, second])
    assert raised.value.status() == "400"
    assert _proxy_batches(stack[0]) == batches  # refused by the proxy: nothing was batched
    good = triton.InferInput("INPUT1", list(a.shape), "INT32")
    good.set_data_from_numpy(a)
    with pytest.raises(InferenceServerException, match="the model has no output 'NOPE'"):
        client.infer("simple", [first, good], outputs=[triton.InferRequestedOutput("NOPE")])
    assert _proxy_batches(stack[0]) == batches


def _proxy_batches(address: str) -> float:
    """Batches the proxy has sent upstream (its batch-size histogram's count)."""
    text = httpx.get(f"http://{address}/metrics", timeout=10).text
    counts = [line for line in text.splitlines() if line.startswith("nexus_proxy_batch_size_count")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counts)


def test_predict_items_carry_every_input_by_name(stack: tuple[str, str]) -> None:
    address = stack[0]
    a, b = _pair(1, seed=9)
    reply = httpx.post(
        f"http://{address}/predict",
        json={"INPUT0": a[0].tolist(), "INPUT1": b[0].tolist()},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    output = reply.json()["output"]
    assert output == {"OUTPUT0": (a + b)[0].tolist(), "OUTPUT1": (a - b)[0].tolist()}
    missing = httpx.post(f"http://{address}/predict", json={"INPUT0": a[0].tolist()}, timeout=10)
    assert missing.status_code == 422
    assert "the input 'INPUT1'" in missing.json()["error"]
