"""`.nexus_meta.json`: seed compatibility, atomic locked writes, corrupt files."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane import MetadataError, Registry
from control_plane.cli import app

SEED_FILE = {
    "models": [
        {
            "commit_hash": "abc123def",
            "model_name": "my_model",
            "storage_uri": "my_model/abc123def.pt",
            "file_size": 524288000,
            "timestamp": "2024-01-15T10:30:00",
            "is_latest": True,
        },
        {
            "commit_hash": "0bc999aaa",
            "model_name": "my_model",
            "storage_uri": "my_model/0bc999aaa.pt",
            "file_size": 1024,
            "timestamp": "2024-01-10T08:00:00",
            "is_latest": False,
        },
    ]
}


def write_meta(repo: Path, data: object) -> Path:
    path = repo / ".nexus_meta.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_seed_format_file_loads_and_lists(repo: Path) -> None:
    write_meta(repo, SEED_FILE)
    registry = Registry()
    entries = registry.list()
    assert [e.commit_hash for e in entries] == ["abc123def", "0bc999aaa"]
    assert registry.resolve("latest").commit_hash == "abc123def"
    assert registry.resolve("0bc9").commit_hash == "0bc999aaa"
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert "abc123d" in result.stdout
    assert "500.0 MiB" in result.stdout


def test_seed_file_survives_a_rewrite_with_unknown_fields(repo: Path) -> None:
    data = json.loads(json.dumps(SEED_FILE))
    data["team_note"] = "keep me"
    data["models"][1]["approved_by"] = "grace"
    path = write_meta(repo, data)
    Registry().rollback("0bc999aaa", "my_model")
    rewritten = json.loads(path.read_text())
    assert rewritten["team_note"] == "keep me"
    assert rewritten["schema_version"] == 1
    assert rewritten["models"][1]["approved_by"] == "grace"
    assert [m["is_latest"] for m in rewritten["models"]] == [False, True]
    first = rewritten["models"][0]
    assert {k: first[k] for k in SEED_FILE["models"][0]} == SEED_FILE["models"][0] | {
        "is_latest": False
    }
    assert first["history"][0]["what"] == "latest"
    assert (first["history"][0]["from"], first["history"][0]["to"]) == (True, False)


def test_corrupt_file_reports_line_and_column_and_is_never_overwritten(
    repo: Path, model_file: Path
) -> None:
    broken = '{\n  "models": [\n    {"commit_hash": "abc",}\n  ]\n}\n'
    path = repo / ".nexus_meta.json"
    path.write_text(broken)
    with pytest.raises(MetadataError, match=r"line 3, column \d+"):
        Registry().list()
    result = CliRunner().invoke(app, ["store", str(model_file), "m"])
    assert result.exit_code == 1
    assert "line 3" in result.stderr
    assert path.read_text() == broken


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "JSON object with a 'models' list"),
        ('{"models": {}}', "JSON object with a 'models' list"),
        ('{"models": [1]}', "entry 0"),
        ('{"models": [{"model_name": "m", "storage_uri": "m/a.pt"}]}', "'commit_hash'"),
        (
            '{"models": [{"commit_hash": "abcd", "model_name": "m", "storage_uri": "u",'
            ' "file_size": "big"}]}',
            "file_size",
        ),
        ('{"schema_version": 99, "models": []}', "schema_version 99"),
    ],
)
def test_structurally_broken_files(repo: Path, content: str, message: str) -> None:
    (repo / ".nexus_meta.json").write_text(content)
    with pytest.raises(MetadataError, match=message):
        Registry().list()


def test_exactly_one_latest_per_model(repo: Path, tmp_path: Path) -> None:
    from tests.conftest import commit_all

    registry = Registry()
    for i in range(3):
        (tmp_path / "m.pt").write_bytes(os.urandom(100))
        registry.store(tmp_path / "m.pt", "a")
        registry.store(tmp_path / "m.pt", "b")
        (repo / "train.py").write_text(f"v{i}\n")
        commit_all(repo, f"v{i}")
    entries = registry.list()
    for name in ("a", "b"):
        assert sum(e.is_latest for e in entries if e.model_name == name) == 1
    oldest_a = [e for e in entries if e.model_name == "a"][-1]
    registry.rollback(oldest_a.commit_hash, "a")
    latest = [e for e in registry.list() if e.is_latest]
    assert {(e.model_name, e.commit_hash) for e in latest} >= {("a", oldest_a.commit_hash)}
    assert len(latest) == 2


def _store_in_process(repo: str, model: str, name: str) -> None:
    os.chdir(repo)
    Registry().store(model, name)


def test_concurrent_stores_both_land(repo: Path, tmp_path: Path) -> None:
    names = [f"model_{i}" for i in range(6)]
    paths = []
    for name in names:
        path = tmp_path / f"{name}.pt"
        path.write_bytes(os.urandom(256 * 1024))
        paths.append(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_store_in_process, args=(str(repo), str(p), n))
        for p, n in zip(paths, names, strict=True)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    stored = {e.model_name for e in Registry().list()}
    assert stored == set(names)
    assert all(e.is_latest for e in Registry().list())
