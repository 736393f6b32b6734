"""The `nexus` CLI end to end, on real Git repositories and the local store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane import Registry
from control_plane.cli import app
from tests.conftest import commit_all, git

runner = CliRunner()

SEED_FIELDS = {"commit_hash", "model_name", "storage_uri", "file_size", "timestamp", "is_latest"}


def nexus(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def test_store_list_load_rollback_flow(repo: Path, tmp_path: Path) -> None:
    first_bytes = os.urandom(50_000)
    (tmp_path / "model.pt").write_bytes(first_bytes)
    commit1 = git(repo, "rev-parse", "HEAD")

    stored = nexus("store", str(tmp_path / "model.pt"), "my_model", "--metric", "acc=0.91")
    assert commit1 in stored.stdout
    # The first store also wrote the merge driver's .gitattributes and .gitignore: all named.
    assert "git add .gitattributes .gitignore .nexus_meta.json && git commit" in stored.stdout

    listed = json.loads(nexus("list", "--json").stdout)
    assert len(listed) == 1
    entry = listed[0]
    assert entry.keys() >= SEED_FIELDS
    assert entry["commit_hash"] == commit1
    assert entry["storage_uri"] == f"my_model/{commit1}.pt"
    assert entry["file_size"] == len(first_bytes)
    assert entry["is_latest"] is True
    assert len(entry["sha256"]) == 64
    assert entry["metrics"] == {"acc": 0.91}

    nexus("load", "latest", "out.pt", "--model-name", "my_model")
    assert (repo / "out.pt").read_bytes() == first_bytes

    (repo / "train.py").write_text("print('better training')\n")
    commit2 = commit_all(repo, "second")
    (tmp_path / "model.pt").write_bytes(os.urandom(40_000))
    again = nexus("store", str(tmp_path / "model.pt"), "my_model").stdout
    assert "git add .nexus_meta.json && git commit" in again  # the others are committed now
    assert json.loads(nexus("show", "latest", "--json").stdout)["commit_hash"] == commit2

    rolled = nexus("rollback", commit1[:7], "my_model")
    assert commit1[:7] in rolled.stdout
    nexus("load", "latest", "again.pt", "--model-name", "my_model")
    assert (repo / "again.pt").read_bytes() == first_bytes

    table = nexus("list").stdout
    assert commit1[:7] in table
    assert commit2[:7] in table
    assert table.index(commit2[:7]) < table.index(commit1[:7])  # newest first


def test_store_refuses_dirty_tree_unless_allowed(repo: Path, model_file: Path) -> None:
    (repo / "train.py").write_text("changed\n")
    refused = nexus("store", str(model_file), "m", code=1)
    assert "uncommitted changes" in refused.stderr
    assert "train.py" in refused.stderr
    assert not (repo / ".nexus_meta.json").exists()

    nexus("store", str(model_file), "m", "--allow-dirty")
    assert json.loads(nexus("show", "latest", "--json").stdout)["dirty"] is True


def test_untracked_files_do_not_make_the_tree_dirty(repo: Path, model_file: Path) -> None:
    (repo / "notes.txt").write_text("scratch")
    nexus("store", str(model_file), "m")


def test_tracked_model_file_warns(repo: Path) -> None:
    (repo / "model.pt").write_bytes(b"\0" * 100)
    commit_all(repo, "oops, a binary")
    result = nexus("store", "model.pt", "m")
    assert "tracked by Git" in result.stderr


def test_not_a_git_repository(tmp_path: Path, model_file: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = nexus("store", str(model_file), "m", code=1)
    assert "not inside a Git repository" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_repository_without_commits(empty_repo: Path, model_file: Path, monkeypatch) -> None:
    monkeypatch.chdir(empty_repo)
    result = nexus("store", str(model_file), "m", code=1)
    assert "no commits yet" in result.stderr


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a/b", "x" * 129, "sp ace", ""])
def test_invalid_model_names_are_refused(repo: Path, model_file: Path, name: str) -> None:
    result = nexus("store", str(model_file), name, code=2)
    assert "not a valid model name" in result.stderr
    assert not (repo / ".nexus").exists() or not any((repo / ".nexus").rglob("*.pt"))


def test_missing_model_file(repo: Path) -> None:
    assert "is not a file" in nexus("store", "nope.pt", "m", code=2).stderr


def test_bad_metric_is_a_usage_error(repo: Path, model_file: Path) -> None:
    assert (
        "must be a number" in nexus("store", str(model_file), "m", "--metric", "a=x", code=2).stderr
    )
    assert "KEY=VALUE" in nexus("store", str(model_file), "m", "--tag", "novalue", code=2).stderr


def test_same_bytes_again_is_a_no_op(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    again = nexus("store", str(model_file), "m")
    assert "already stored" in again.stdout
    assert len(json.loads(nexus("list", "--json").stdout)) == 1


def test_other_bytes_at_same_commit_are_refused(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    model_file.write_bytes(b"different")
    refused = nexus("store", str(model_file), "m", code=1)
    assert "already stored with other bytes" in refused.stderr
    assert "commit" in refused.stderr


def test_load_errors(repo: Path, model_file: Path, tmp_path: Path) -> None:
    assert "no models are stored" in nexus("load", "latest", "x.pt", code=1).stderr
    nexus("store", str(model_file), "a")
    nexus("store", str(model_file), "b")
    ambiguous = nexus("load", "latest", "x.pt", code=1).stderr
    assert "ambiguous" in ambiguous
    assert "a, b" in ambiguous
    prefix = git(repo, "rev-parse", "HEAD")[:6]
    both = nexus("load", prefix, "x.pt", code=1).stderr
    assert "matches 2 versions" in both
    assert "a@" in both
    assert "b@" in both
    assert "no version at 'ffff'" in nexus("load", "ffff", "x.pt", "-m", "a", code=1).stderr
    assert "no model has a version or alias 'xyz'" in nexus("load", "xyz", "x.pt", code=1).stderr
    assert "not a version reference" in nexus("load", "x y", "x.pt", code=2).stderr
    assert "no model named 'c'" in nexus("load", "latest", "x.pt", "-m", "c", code=1).stderr
    # Issue 10 made missing parents be created; a parent that is a file is still an error.
    (repo / "afile").write_text("not a folder")
    assert "not a directory" in nexus("load", "latest", "afile/x.pt", "-m", "a", code=2).stderr
    assert not (repo / "x.pt").exists()


def test_load_creates_missing_parent_folders(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    nexus("load", "latest", "out/deeper/model.pt")
    assert (repo / "out" / "deeper" / "model.pt").read_bytes() == model_file.read_bytes()


def test_failed_load_leaves_no_folders_it_created(repo: Path, model_file: Path) -> None:
    entry = Registry().store(model_file, "m").entry
    (repo / ".nexus" / "store" / entry.storage_uri).write_bytes(b"tampered")
    assert "changed or truncated" in nexus("load", "latest", "new/dir/model.pt", code=3).stderr
    assert not (repo / "new").exists()


def test_load_into_directory_keeps_stored_name(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    (repo / "models").mkdir()
    nexus("load", "latest", "models")
    commit = git(repo, "rev-parse", "HEAD")
    assert (repo / "models" / f"{commit}.pt").read_bytes() == model_file.read_bytes()


def test_corrupted_object_is_detected_and_dest_untouched(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    stored = next((repo / ".nexus" / "store" / "m").glob("*.pt"))
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    (repo / "out.pt").write_bytes(b"previous contents")

    result = nexus("load", "latest", "out.pt", code=3)
    assert "sha256" in result.stderr
    assert (repo / "out.pt").read_bytes() == b"previous contents"
    assert [p.name for p in repo.iterdir() if p.name.startswith(".out.pt")] == []


def test_truncated_or_missing_object(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    stored = next((repo / ".nexus" / "store" / "m").glob("*.pt"))
    stored.write_bytes(b"short")
    assert "has 5 bytes" in nexus("load", "latest", "out.pt", code=3).stderr
    stored.unlink()
    assert "missing from the local store" in nexus("load", "latest", "out.pt", code=3).stderr
    assert not (repo / "out.pt").exists()


def test_rollback_errors_and_no_op(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    commit = git(repo, "rev-parse", "HEAD")
    assert "already the latest" in nexus("rollback", commit[:8], "m").stdout
    assert "no model named 'other'" in nexus("rollback", commit[:8], "other", code=1).stderr


def test_usage_error_exits_2(repo: Path) -> None:
    assert runner.invoke(app, ["store"]).exit_code == 2


def test_cli_as_real_subprocess(repo: Path, model_file: Path) -> None:
    exe = Path(sys.executable).with_name("nexus")
    env = dict(os.environ)
    stored = subprocess.run(
        [str(exe), "store", str(model_file), "proc_model", "--quiet"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    listed = subprocess.run(
        [str(exe), "list", "--json"], cwd=repo, env=env, capture_output=True, timeout=60
    )
    assert json.loads(listed.stdout)[0]["model_name"] == "proc_model"
    failed = subprocess.run(
        [str(exe), "load", "latest", "x", "-m", "missing"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("Error: no model named 'missing'")
    assert "Traceback" not in failed.stderr


def test_verify_checks_every_stored_version(repo: Path, model_file: Path, tmp_path: Path) -> None:
    nexus("store", str(model_file), "a")
    nexus("store", str(model_file), "b")
    (repo / "train.py").write_text("v2\n")
    commit_all(repo, "v2")
    (tmp_path / "c.pt").write_bytes(os.urandom(5000))
    nexus("store", str(tmp_path / "c.pt"), "a")
    assert "3 of 3 versions verified" in nexus("verify").stdout

    stored = repo / ".nexus" / "store" / "a"
    victim = next(p for p in stored.iterdir() if p.stat().st_size == 5000)
    victim.write_bytes(os.urandom(5000))
    result = nexus("verify", code=3)
    assert "FAILED" in result.stdout
    assert "2 of 3 versions verified" in result.stdout
    report = json.loads(nexus("verify", "-m", "b", "--json").stdout)
    assert [r["ok"] for r in report] == [True]
    assert not any(p.name.startswith("tmp") for p in (repo / ".nexus").iterdir())


def test_version_help_and_completion() -> None:
    from importlib.metadata import version

    assert nexus("--version").stdout.strip() == f"nexus {version('nexusml')}"
    top = nexus("--help").stdout
    assert "--install-completion" in top
    store_help = nexus("store", "--help").stdout
    assert "nexus store [OPTIONS] PATH MODEL_NAME" in store_help
    assert "--metric" in store_help
    assert "TEXT" in store_help
    for help_text in (top, store_help, nexus("list", "--help").stdout):
        assert "<bool>" not in help_text
        assert "<list[str]>" not in help_text
        assert "{path}" not in help_text
