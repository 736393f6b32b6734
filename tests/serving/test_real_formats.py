"""The formats teams store, made here and served with no code: a Hugging Face folder (a tiny
BERT, for text classification and for feature extraction) and a TensorFlow SavedModel of
two named inputs, each stored with `nexus store DIR`, served by the model server behind the
proxy as real processes, and answered through the proxy: `/predict` and v2 (the stock
tritonclient), equal to running the model here."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from typer.testing import CliRunner

from control_plane import Registry
from control_plane.cli import app
from control_plane.core.errors import UsageError
from control_plane.core.folders import TEXT_CLASSIFICATION, detect_folder
from model_server.errors import ModelRunError
from model_server.service import load_entry
from model_server.settings import ServerSettings
from model_server.tensors import TensorPredictor
from tests.harness.hf import (
    SENTENCES,
    classify,
    embed,
    make_tiny_bert,
    make_tiny_vit,
    make_two_input_savedmodel,
)
from tests.harness.servers import console_script, free_port, server_and_proxy

pytestmark = pytest.mark.long
runner = CliRunner()


def store(folder: Path, name: str, *flags: str) -> str:
    result = runner.invoke(app, ["store", str(folder), name, *flags])
    assert result.exit_code == 0, result.output
    return result.output


def stats(server: str, name: str) -> tuple[int, int]:
    """(items inferred, forward passes) from the v2 statistics extension."""
    reply = httpx.get(f"{server}/v2/models/{name}/stats", headers={"Authorization": "Bearer t0k"})
    figures = reply.json()["model_stats"][0]
    return int(figures["inference_count"]), int(figures["execution_count"])


def test_a_transformers_folder_is_served_for_its_task_without_code(
    repo: Path, tmp_path: Path
) -> None:
    model, tokenizer = make_tiny_bert(tmp_path / "sentiment")
    said = store(tmp_path / "sentiment", "sentiment")
    assert "transformers: BertForSequenceClassification, served for text-classification" in said
    entry = Registry(repo).resolve("latest", "sentiment")
    assert (entry.format, entry.task) == ("transformers", TEXT_CLASSIFICATION)
    expected = dict(zip(SENTENCES, classify(model, tokenizer, SENTENCES), strict=True))
    with server_and_proxy(repo, tmp_path / "cache", server_flags=["--model-name", "sentiment"]) as (
        proxy,
        server,
    ):
        one = httpx.post(f"http://{proxy}/predict", json={"text": SENTENCES[0]}, timeout=30)
        assert one.status_code == 200, one.text
        label, score = expected[SENTENCES[0]]
        assert one.json()["output"]["label"] == label
        assert one.json()["output"]["score"] == pytest.approx(score, abs=1e-5)

        client = triton.InferenceServerClient(proxy)
        text = triton.InferInput("text", [len(SENTENCES)], "BYTES")
        text.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=object))
        answer = client.infer("sentiment", [text], headers={"Authorization": "Bearer t0k"})
        labels = [value.decode() for value in answer.as_numpy("label")]
        assert labels == [expected[s][0] for s in SENTENCES]
        assert answer.as_numpy("score") == pytest.approx(
            [expected[s][1] for s in SENTENCES], abs=1e-5
        )
        metadata = client.get_model_metadata("sentiment", headers={"Authorization": "Bearer t0k"})
        assert [i["datatype"] for i in metadata["inputs"]] == ["BYTES"]

        before = stats(server, "sentiment")

        async def callers() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as http:
                sent = [
                    http.post(f"http://{proxy}/predict", json={"text": SENTENCES[i % 6]})
                    for i in range(32)
                ]
                return list(await asyncio.gather(*sent))

        replies = asyncio.run(callers())
        for index, reply in enumerate(replies):
            label, score = expected[SENTENCES[index % 6]]
            assert reply.json()["output"]["label"] == label
            assert reply.json()["output"]["score"] == pytest.approx(score, abs=1e-5)
        items, passes = (
            now - then for now, then in zip(stats(server, "sentiment"), before, strict=True)
        )
        assert items == 32
        assert passes < 32, "32 callers were not batched"


def test_feature_extraction_answers_pooled_embeddings(repo: Path, tmp_path: Path) -> None:
    model, tokenizer = make_tiny_bert(tmp_path / "encoder", head="features")
    store(tmp_path / "encoder", "encoder")
    tensors = Registry(repo).resolve("latest", "encoder").tensors
    assert tensors is not None
    assert tensors["outputs"][0] == {
        "name": "embedding",
        "datatype": "FP32",
        "shape": [-1, 32],
    }
    expected = embed(model, tokenizer, SENTENCES[:3])
    with server_and_proxy(repo, tmp_path / "cache", server_flags=["--model-name", "encoder"]) as (
        proxy,
        _,
    ):
        for sentence, vector in zip(SENTENCES[:3], expected, strict=True):
            reply = httpx.post(f"http://{proxy}/predict", json={"text": sentence}, timeout=30)
            assert np.allclose(reply.json()["output"], vector, atol=1e-5)


def test_a_savedmodel_is_served_by_its_serving_signature(repo: Path, tmp_path: Path) -> None:
    make_two_input_savedmodel(tmp_path / "saved")
    store(tmp_path / "saved", "twoin")
    entry = Registry(repo).resolve("latest", "twoin")
    assert entry.format == "savedmodel"
    assert entry.tensors is not None
    assert [t["name"] for t in entry.tensors["inputs"]] == ["a", "b"]
    a = np.array([[1, 2, 3], [0.5, 0, -1]], dtype=np.float32)
    b = np.array([[10, 20, 30], [2, 2, 2]], dtype=np.float32)
    with server_and_proxy(repo, tmp_path / "cache", server_flags=["--model-name", "twoin"]) as (
        proxy,
        _,
    ):
        reply = httpx.post(
            f"http://{proxy}/predict", json={"a": a[0].tolist(), "b": b[0].tolist()}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["output"] == {
            "product": (a[0] * b[0]).tolist(),
            "sum": (a[0] + 2 * b[0]).tolist(),
        }
        client = triton.InferenceServerClient(proxy)
        inputs = [triton.InferInput(name, [2, 3], "FP32") for name in ("a", "b")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        answer = client.infer("twoin", inputs, headers={"Authorization": "Bearer t0k"})
        assert np.array_equal(answer.as_numpy("sum"), a + 2 * b)
        assert np.array_equal(answer.as_numpy("product"), a * b)


def test_folders_that_cannot_be_served_are_refused_with_the_file_named(
    repo: Path, tmp_path: Path
) -> None:
    make_tiny_bert(tmp_path / "bert")
    (tmp_path / "bert" / "model.safetensors").unlink()
    refused = runner.invoke(app, ["store", str(tmp_path / "bert"), "bert"])
    assert refused.exit_code == 2
    assert "model.safetensors or pytorch_model.bin is missing" in refused.output

    make_tiny_bert(tmp_path / "sharded")
    index = {"weight_map": {"bert.embeddings": "model-00001-of-00002.safetensors"}}
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
    refused = runner.invoke(app, ["store", str(tmp_path / "sharded"), "bert"])
    assert refused.exit_code == 2
    assert "missing model-00001-of-00002.safetensors" in refused.output

    make_tiny_bert(tmp_path / "untokenized")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "untokenized" / name).unlink(missing_ok=True)
    with pytest.raises(UsageError, match="has no tokenizer"):
        detect_folder(tmp_path / "untokenized")
    make_tiny_bert(tmp_path / "fine")
    assert detect_folder(tmp_path / "fine", "feature-extraction").task == "feature-extraction"
    with pytest.raises(UsageError, match="--task summarize"):
        detect_folder(tmp_path / "fine", "summarize")


def test_a_folder_that_needs_remote_code_is_refused_unless_trusted(
    repo: Path, tmp_path: Path
) -> None:
    make_tiny_bert(tmp_path / "custom")
    config_file = tmp_path / "custom" / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_custom.Custom"}
    config_file.write_text(json.dumps(config))
    said = store(tmp_path / "custom", "custom")
    assert "NEXUS_TRUST_REMOTE_CODE=1" in said
    port = free_port()
    done = subprocess.run(
        [console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "NEXUS_CACHE_DIR": str(tmp_path / "c"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "maps its classes to code in the folder (auto_map)" in done.stderr
    assert "NEXUS_TRUST_REMOTE_CODE=1" in done.stderr


def test_token_and_image_classification_in_confined_workers(repo: Path, tmp_path: Path) -> None:
    """The other two built-in tasks, loaded in the model server's confined workers: each
    text's tokens labelled, and encoded images (PNG bytes) classified, as computed here."""
    import io

    import torch
    from PIL import Image

    tagger, tokenizer = make_tiny_bert(tmp_path / "tagger", head="tokens")
    vit, processor = make_tiny_vit(tmp_path / "vit")
    tagged = Registry(repo).store(tmp_path / "tagger", "tagger").entry
    seen = Registry(repo).store(tmp_path / "vit", "vit").entry
    assert (tagged.task, seen.task) == ("token-classification", "image-classification")
    settings = ServerSettings(repo=repo, cache_dir=tmp_path / "cache")

    predictor = load_entry(settings, tagged)
    try:
        assert predictor.runtime()["process"] == "workers"
        outputs = predictor.predict([{"text": SENTENCES[0]}, {"text": SENTENCES[4]}])
    finally:
        predictor.close()
    encoded = tokenizer(SENTENCES[0], return_tensors="pt")
    with torch.inference_mode():
        labels = tagger(**encoded).logits.argmax(dim=-1)[0, 1:-1].tolist()  # no [CLS], [SEP]
    entities = json.loads(outputs[0])
    assert [e["word"] for e in entities] == SENTENCES[0].split()
    assert [e["label"] for e in entities] == [tagger.config.id2label[i] for i in labels]
    assert (entities[1]["start"], entities[1]["end"]) == (len("the "), len("the movie"))

    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    images = [Image.new("RGB", (40, 30), colour) for colour in colours]
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        probabilities = torch.softmax(vit(pixel_values=pixels).logits, dim=-1)
    predictor = load_entry(settings, seen)
    assert isinstance(predictor, TensorPredictor)
    try:
        batch = np.empty(3, dtype=object)
        batch[:] = pngs
        answer = predictor.run_named({"image": batch})  # as v2 BYTES arrive
        broken = np.empty(1, dtype=object)
        broken[:] = [b"not an image"]
        with pytest.raises(ModelRunError, match="an image cannot be decoded"):
            predictor.run_named({"image": broken})
    finally:
        predictor.close()
    scores, indices = probabilities.max(dim=-1)
    assert [label.decode() for label in answer["label"]] == [
        vit.config.id2label[int(i)] for i in indices
    ]
    assert answer["score"] == pytest.approx(scores.tolist(), abs=1e-5)


CUSTOM_CONFIG = """
from transformers import BertConfig


class CustomConfig(BertConfig):
    model_type = "custom-bert"
"""
CUSTOM_MODEL = '''
from transformers import BertForSequenceClassification

from .configuration_custom import CustomConfig


class AlwaysPositive(BertForSequenceClassification):
    """The folder's own code: the BERT's logits, the last label's raised by 100."""

    config_class = CustomConfig

    def forward(self, **inputs):
        output = super().forward(**inputs)
        output.logits[:, -1] += 100.0
        return output
'''


def test_trusted_remote_code_runs_confined_in_the_worker(repo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    make_tiny_bert(folder)
    (folder / "configuration_custom.py").write_text(CUSTOM_CONFIG)
    (folder / "modeling_custom.py").write_text(CUSTOM_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom-bert"
    config["architectures"] = ["AlwaysPositive"]
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForSequenceClassification": "modeling_custom.AlwaysPositive",
    }
    (folder / "config.json").write_text(json.dumps(config))
    store(folder, "custom", "--task", "text-classification")
    entry = Registry(repo).resolve("latest", "custom")
    trusted = ServerSettings(repo=repo, cache_dir=tmp_path / "cache", trust_remote_code=True)
    predictor = load_entry(trusted, entry)
    try:
        assert predictor.runtime()["process"] == "workers"
        outputs = predictor.predict([{"text": s} for s in SENTENCES[:3]])
    finally:
        predictor.close()
    assert [output["label"] for output in outputs] == ["positive"] * 3
