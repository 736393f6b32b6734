"""The model server over real HTTP with real tiny models stored in a real Git repo."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

from nexus_common import wire
from tests.harness.models import IN_FEATURES


def direct(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(inputs)).numpy()


@pytest.mark.parametrize("name", ["mlp_ts", "mlp_onnx", "mlp_pickle"])
async def test_outputs_match_the_model(stored, server, name: str) -> None:
    options = {"trust_pickle": True} if name == "mlp_pickle" else {}
    async with server(model_name=name, **options) as client:
        rng = np.random.default_rng(0)
        for size in (1, 7, 32):
            inputs = rng.standard_normal((size, IN_FEATURES)).astype(np.float32)
            response = await client.post(
                "/predict/batch", json={"inputs": [{"input": row.tolist()} for row in inputs]}
            )
            assert response.status_code == 200
            body = response.json()
            assert len(body["outputs"]) == size
            np.testing.assert_allclose(
                np.array(body["outputs"]), direct(stored[name], inputs), rtol=1e-5, atol=1e-6
            )
            assert body["model"]["name"] == name
            assert len(body["model"]["commit_hash"]) == 40
            assert len(body["model"]["sha256"]) == 64


async def test_handler_serves_a_state_dict(stored, server) -> None:
    handler = "tests.model_server.handlers:StateDictMLP"
    async with server(model_name="mlp_state", handler=handler) as client:
        rng = np.random.default_rng(1)
        for size in (1, 7, 32):
            inputs = rng.standard_normal((size, IN_FEATURES)).astype(np.float32)
            items = [{"features": row.tolist()} for row in inputs]
            body = (await client.post("/predict/batch", json={"inputs": items})).json()
            np.testing.assert_allclose(
                np.array(body["outputs"]), direct(stored["mlp_state"], inputs), rtol=1e-5, atol=1e-6
            )
        items.insert(3, {"features": [1.0]})
        body = (await client.post("/predict/batch", json={"inputs": items})).json()
    assert body["outputs"][3] == {"error": "cannot decode this item: need 4 features, got 1"}
    got = np.array(body["outputs"][:3] + body["outputs"][4:])
    np.testing.assert_allclose(got, direct(stored["mlp_state"], inputs), rtol=1e-5, atol=1e-6)


async def test_malformed_items_get_errors_at_their_index(stored, server) -> None:
    async with server(model_name="mlp_ts") as client:
        good = [0.1, 0.2, 0.3, 0.4]
        items = [
            {"input": good},
            {"nope": 1},
            {"input": [[1, 2], [3]]},
            {"input": [1.0, 2.0]},  # wrong width for the first Linear layer
            "just a string",
            {"input": good},
        ]
        body = (await client.post("/predict/batch", json={"inputs": items})).json()
    outputs = body["outputs"]
    assert len(outputs) == 6
    assert "nested list of numbers" in outputs[1]["error"]
    assert "regular shape" in outputs[2]["error"]
    assert "'input' has shape [2]; the model expects [4]" in outputs[3]["error"]
    assert "error" in outputs[4]
    assert outputs[0] == outputs[5]
    assert len(outputs[0]) == 3


async def test_onnx_checks_static_shape(stored, server) -> None:
    async with server(model_name="mlp_onnx") as client:
        items = [{"input": [1.0, 2.0, 3.0]}, {"input": [1.0, 2.0, 3.0, 4.0]}]
        outputs = (await client.post("/predict/batch", json={"inputs": items})).json()["outputs"]
    assert outputs[0] == {"error": "'input' has shape [3]; the model expects [4]."}
    assert len(outputs[1]) == 3


async def test_bad_requests(stored, server) -> None:
    async with server(model_name="mlp_ts", max_batch=8) as client:
        empty = await client.post("/predict/batch", json={"inputs": []})
        assert empty.status_code == 422
        assert "empty" in empty.json()["error"]
        big = await client.post("/predict/batch", json={"inputs": [{"input": [0] * 4}] * 9})
        assert big.status_code == 413
        assert "limit is 8" in big.json()["error"]
        shape = await client.post("/predict/batch", json=[1, 2])
        assert shape.status_code == 422
        broken = await client.post("/predict/batch", content=b"{oops")
        assert broken.status_code == 400
        assert "not valid JSON" in broken.json()["error"]
        missing = await client.get("/nothing")
        assert missing.status_code == 404
        assert "error" in missing.json()


async def test_single_predict_health_model_metrics(stored, server) -> None:
    async with server(model_name="mlp_ts") as client:
        one = await client.post("/predict", json={"input": [0.1, 0.2, 0.3, 0.4]})
        assert one.status_code == 200
        expected = direct(stored["mlp_ts"], np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32))
        np.testing.assert_allclose(one.json()["output"], expected[0], rtol=1e-5)
        bad = await client.post("/predict", json={"input": "x"})
        assert bad.status_code == 422
        assert (await client.get("/health")).json() == {"status": "ok"}
        info = (await client.get("/model")).json()
        assert info["model_name"] == "mlp_ts"
        assert info["device"] == "cpu"
        assert info["format"] == "torchscript"
        metrics = (await client.get("/metrics")).text
    assert 'nexus_model_requests_total{endpoint="/predict",status="200"} 1.0' in metrics
    assert "nexus_model_batch_size_bucket" in metrics
    assert "nexus_model_inference_seconds_bucket" in metrics
    assert "nexus_model_items_total 2.0" in metrics


async def test_example_image_classifier_handler(repo, tmp_path, server) -> None:
    from PIL import Image

    from control_plane import Registry

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 26 * 26, 10),
    ).eval()
    path = tmp_path / "classifier.pt"
    torch.jit.script(net).save(str(path))
    Registry(repo).store(path, "digits")

    image = Image.new("L", (28, 28), color=128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    handler = "examples.image_classifier.handler:ImageClassifier"
    async with server(model_name="digits", handler=handler) as client:
        items = [{"image": encoded}, {"image": "not base64!"}]
        outputs = (await client.post("/predict/batch", json={"inputs": items})).json()["outputs"]
    pixels = torch.full((1, 1, 28, 28), 128 / 255.0)
    with torch.inference_mode():
        expected = torch.softmax(net(pixels), dim=1)[0]
    assert outputs[0]["label"] == int(expected.argmax())
    np.testing.assert_allclose(outputs[0]["scores"], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert "not a base64 PNG or JPEG" in outputs[1]["error"]


async def test_an_output_with_an_error_field_is_an_output(stored, server) -> None:
    # Issue 10: per-item failures are the wire's `errors`, never guessed from an output's keys.
    handler = "tests.model_server.handlers:ErrorShapedOutputs"
    async with server(model_name="mlp_ts", handler=handler) as client:
        one = await client.post("/predict", json={"x": 3})
        batch = await client.post("/predict/batch", json={"inputs": [{"x": 1}, {"x": 2}]})
    assert one.status_code == 200
    assert one.json()["output"] == {"value": 3, "error": 0.25}
    assert batch.status_code == 200
    assert "errors" not in batch.json()
    assert batch.json()["outputs"] == [{"value": 1, "error": 0.25}, {"value": 2, "error": 0.25}]


async def test_failed_items_are_named_in_errors(stored, server) -> None:
    async with server(model_name="mlp_ts") as client:
        items = [{"input": [0.1, 0.2, 0.3, 0.4]}, {"nope": 1}]
        body = (await client.post("/predict/batch", json={"inputs": items})).json()
        health = await client.get("/health")
    assert list(body["errors"]) == ["1"]
    assert "nested list of numbers" in body["errors"]["1"]
    assert wire.concurrency_of(health.headers) == 1
