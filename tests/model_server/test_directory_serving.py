"""A model server serves a directory model through a handler that receives the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control_plane import Registry
from model_server.errors import ModelLoadError
from model_server.service import load_model
from model_server.settings import ServerSettings


@pytest.fixture
def directory_model(repo: Path, tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "tokenizer").mkdir(parents=True)
    (tree / "config.json").write_text(json.dumps({"scale": 3}))
    (tree / "tokenizer" / "vocab.txt").write_text("zero one two\n")
    Registry(repo).store(tree, "words")
    return tree


async def test_a_handler_serves_a_directory_model(directory_model, server) -> None:
    async with server(
        model_name="words", handler="tests.model_server.handlers:DirectoryHandler"
    ) as client:
        reply = await client.post("/predict/batch", json={"inputs": [1, 2]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"] == [{"word": "one", "scaled": 3}, {"word": "two", "scaled": 6}]


def test_a_directory_without_a_handler_is_a_clear_error(directory_model, repo, tmp_path) -> None:
    settings = ServerSettings(repo=repo, cache_dir=tmp_path / "cache", model_name="words")
    with pytest.raises(ModelLoadError, match="directory model"):
        load_model(settings)
    # the cached tree is verified and reused
    cached = next((tmp_path / "cache").glob("*.tree"))
    assert (cached / "tokenizer" / "vocab.txt").read_text() == "zero one two\n"
