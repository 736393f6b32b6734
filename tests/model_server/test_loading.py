"""Resolving, fetching, caching and refusing models."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane import AmbiguousRefError, IntegrityError, NotFoundError, Registry
from model_server.errors import ModelLoadError
from model_server.loader import fetch_version
from model_server.service import load_model
from model_server.settings import ServerSettings


def settings(repo: Path, tmp_path: Path, **kw) -> ServerSettings:
    return ServerSettings(repo=repo, cache_dir=tmp_path / "cache", **kw)


def test_missing_model_name_with_several_models(stored, repo, tmp_path) -> None:
    with pytest.raises(AmbiguousRefError, match="4 models are stored") as info:
        load_model(settings(repo, tmp_path))
    assert "NEXUS_MODEL_NAME" in (info.value.hint or "")


def test_unknown_model_and_commit(stored, repo, tmp_path) -> None:
    with pytest.raises(NotFoundError, match="no model named 'nope'"):
        load_model(settings(repo, tmp_path, model_name="nope"))
    with pytest.raises(NotFoundError, match="no version at 'abcdef'"):
        load_model(settings(repo, tmp_path, model_name="mlp_ts", model_ref="abcdef"))


def test_pinned_commit_prefix(stored, repo, tmp_path) -> None:
    commit = Registry(repo).resolve("latest", "mlp_ts").commit_hash
    entry, predictor = load_model(
        settings(repo, tmp_path, model_name="mlp_ts", model_ref=commit[:6])
    )
    assert entry.commit_hash == commit
    assert predictor.device == "cpu"


def test_cache_is_reused_and_corrupt_cache_refetched(stored, repo, tmp_path) -> None:
    registry = Registry(repo)
    cache = tmp_path / "cache"
    first = fetch_version(registry, "latest", "mlp_ts", cache)
    assert not first.from_cache
    again = fetch_version(registry, "latest", "mlp_ts", cache)
    assert again.from_cache
    assert again.path == first.path
    first.path.write_bytes(b"corrupted cache")
    healed = fetch_version(registry, "latest", "mlp_ts", cache)
    assert not healed.from_cache
    assert healed.path.stat().st_size == first.entry.file_size


def test_corrupt_stored_object_is_refused(stored, repo, tmp_path) -> None:
    entry = Registry(repo).resolve("latest", "mlp_ts")
    stored_file = repo / ".nexus" / "store" / entry.storage_uri
    data = bytearray(stored_file.read_bytes())
    data[-10] ^= 0xFF
    stored_file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        load_model(settings(repo, tmp_path, model_name="mlp_ts"))
    assert not any((tmp_path / "cache").iterdir())


def test_pickle_needs_opt_in(stored, repo, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="pickled torch module") as info:
        load_model(settings(repo, tmp_path, model_name="mlp_pickle"))
    assert "NEXUS_TRUST_PICKLE=1" in (info.value.hint or "")
    _, predictor = load_model(settings(repo, tmp_path, model_name="mlp_pickle", trust_pickle=True))
    assert predictor.predict([{"input": [0, 0, 0, 0]}])[0]


def test_state_dict_needs_a_handler(stored, repo, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="state dict") as info:
        load_model(settings(repo, tmp_path, model_name="mlp_state"))
    assert "NEXUS_HANDLER" in (info.value.hint or "")


def test_bad_handler_and_device(stored, repo, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"package\.module:Class, not .nocolon."):
        load_model(settings(repo, tmp_path, model_name="mlp_ts", handler="nocolon"))
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model(settings(repo, tmp_path, model_name="mlp_ts", handler="no.such:Thing"))
    with pytest.raises(ModelLoadError, match="cpu, cuda"):
        load_model(settings(repo, tmp_path, model_name="mlp_ts", device="tpu"))
    with pytest.raises(ModelLoadError, match="needs a GPU"):
        load_model(settings(repo, tmp_path, model_name="mlp_ts", dtype="float16"))


def test_serves_the_production_version(stored, repo, tmp_path) -> None:
    registry = Registry(repo)
    with pytest.raises(NotFoundError, match="no version in production"):
        load_model(settings(repo, tmp_path, model_name="mlp_ts", model_ref="production"))
    registry.promote("latest", "mlp_ts", "production")
    entry, _ = load_model(settings(repo, tmp_path, model_name="mlp_ts", model_ref="production"))
    assert entry.stage == "production"
