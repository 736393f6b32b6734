"""Stages, approval, lineage, provenance, dedup, queries and history, on real Git repos."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from control_plane import ConflictError, Registry
from control_plane.cli import app
from tests.conftest import commit_all, git

runner = CliRunner()


def nexus(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def show(ref: str, model: str = "m") -> dict[str, Any]:
    return json.loads(nexus("show", ref, "-m", model, "--json").stdout)


def new_commit(repo: Path, text: str) -> str:
    (repo / "train.py").write_text(text)
    return commit_all(repo, text)


def test_walk_through_the_lifecycle(repo: Path, tmp_path: Path) -> None:
    v1_bytes, v2_bytes = os.urandom(1000), os.urandom(2000)
    (tmp_path / "m.pt").write_bytes(v1_bytes)
    c1 = git(repo, "rev-parse", "HEAD")
    nexus("store", str(tmp_path / "m.pt"), "m", "--owner", "ada", "--metric", "accuracy=0.8")
    assert show("latest")["status"] == "pending_review"
    nexus("approve", c1[:7], "m")
    nexus("promote", c1[:7], "m", "--stage", "staging")
    assert show("staging")["commit_hash"] == c1
    nexus("promote", "staging", "m", "--stage", "production")
    v1 = show(c1[:7])
    assert v1["stage"] == "production"
    assert v1["status"] == "approved"

    c2 = new_commit(repo, "v2")
    (tmp_path / "m.pt").write_bytes(v2_bytes)
    nexus("store", str(tmp_path / "m.pt"), "m")
    nexus("approve", c2[:7], "m")
    out = nexus("promote", c2[:7], "m", "--stage", "production", "--archive-previous").stdout
    assert "archived" in out
    assert show(c1[:7])["stage"] == "archived"
    assert show("production")["commit_hash"] == c2
    nexus("load", "production", "prod.pt", "-m", "m")
    assert (repo / "prod.pt").read_bytes() == v2_bytes

    nexus("rollback", c1[:7], "m")
    assert show("latest")["commit_hash"] == c1
    nexus("load", "latest", "latest.pt", "-m", "m")
    assert (repo / "latest.pt").read_bytes() == v1_bytes

    events = json.loads(nexus("history", "m", "--json").stdout)
    kinds = [(e["commit_hash"][:7], e["what"], e["from"], e["to"]) for e in events]
    assert (c1[:7], "status", "pending_review", "approved") in kinds
    assert (c1[:7], "stage", "production", "archived") in kinds
    assert (c2[:7], "latest", True, False) in kinds
    assert all(e["who"] == "Ada Lovelace <ada@example.com>" for e in events)
    assert "production" in nexus("history", "m").stdout


def test_reject_and_require_approval(repo: Path, model_file: Path) -> None:
    (repo / ".nexusrc").write_text("require_approval: true\n")
    commit_all(repo, "require approval")
    nexus("store", str(model_file), "m")
    refused = nexus("promote", "latest", "m", "--stage", "production", code=1)
    assert "require_approval is on" in refused.stderr
    assert "nexus approve" in refused.stderr
    nexus("promote", "latest", "m", "--stage", "staging")  # staging needs no approval
    nexus("reject", "latest", "m", "--reason", "overfits")
    entry = show("latest")
    assert (entry["status"], entry["status_reason"]) == ("rejected", "overfits")
    assert (
        "require_approval"
        in nexus("promote", "latest", "m", "--stage", "production", code=1).stderr
    )
    assert show("latest").get("stage") == "staging"
    nexus("approve", "latest", "m")
    nexus("promote", "latest", "m", "--stage", "production")
    nexus("archive", "production", "m")
    assert show("latest")["stage"] == "archived"
    assert "no version in production" in nexus("load", "production", "x", "-m", "m", code=1).stderr


def test_bad_lifecycle_input(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    assert (
        "staging or production" in nexus("promote", "latest", "m", "--stage", "prod", code=2).stderr
    )
    assert "--reason" in nexus("reject", "latest", "m", "--reason", " ", code=2).stderr
    assert "no model named 'x'" in nexus("history", "x", code=1).stderr


def test_provenance_and_config_dedup(repo: Path, tmp_path: Path, model_file: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("lr: 0.001\nepochs: 3\n")
    nexus(
        "store",
        str(model_file),
        "m",
        "--config",
        str(config),
        "--param",
        "epochs=5",
        "--training-data",
        "s3://data/v3",
        "--base-model",
        "resnet50",
        "--owner",
        "ada",
    )
    entry = show("latest")
    assert entry["params"] == {"lr": 0.001, "epochs": 5}
    assert len(entry["training_config_hash"]) == 64
    assert entry["training_data"] == "s3://data/v3"
    assert entry["base_model"] == "resnet50"
    assert entry["environment"]["python"].startswith("3.")
    assert "torch" in entry["environment"]

    new_commit(repo, "retrain")
    model_file.write_bytes(os.urandom(500))
    warned = nexus("store", str(model_file), "m", "--config", str(config))
    assert "same config" in warned.stderr

    (repo / ".nexusrc").write_text("dedup_by_config: true\n")
    new_commit(repo, "retrain again")
    model_file.write_bytes(os.urandom(600))
    refused = nexus("store", str(model_file), "m", "--config", str(config), code=1)
    assert "dedup_by_config" in refused.stderr
    assert "--force" in refused.stderr
    nexus("store", str(model_file), "m", "--config", str(config), "--force")


def test_same_bytes_at_another_commit_upload_nothing(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    first = show("latest")
    new_commit(repo, "no model change")
    result = nexus("store", str(model_file), "m")
    assert f"identical bytes to m@{first['commit_hash'][:7]}" in result.stdout
    second = show("latest")
    assert second["commit_hash"] != first["commit_hash"]
    assert second["storage_uri"] == first["storage_uri"]
    assert len(list((repo / ".nexus" / "store" / "m").iterdir())) == 1
    nexus("load", "latest", "out.pt", "-m", "m")
    assert (repo / "out.pt").read_bytes() == model_file.read_bytes()


def test_lineage_across_models(repo: Path, tmp_path: Path) -> None:
    def store(name: str, *extra: str) -> str:
        (tmp_path / f"{name}.pt").write_bytes(os.urandom(300))
        nexus("store", str(tmp_path / f"{name}.pt"), name, *extra)
        return show("latest", name)["commit_hash"]

    teacher = store("teacher")
    other = store("other")
    new_commit(repo, "distil")
    student = store(
        "student", "--parent", f"teacher@{teacher[:7]}", "--lineage-type", "distillation"
    )
    new_commit(repo, "merge")
    merged = store(
        "merged", "--parent", "student", "--parent", f"other@{other[:7]}", "--lineage-type", "merge"
    )

    tree = json.loads(nexus("lineage", f"student@{student[:7]}", "--json").stdout)
    assert tree["ancestors"][0]["model"] == "teacher"
    assert tree["descendants"][0]["model"] == "merged"
    assert tree["descendants"][0]["commit_hash"] == merged
    top = json.loads(nexus("lineage", "merged", "--json").stdout)
    assert {p["model"] for p in top["ancestors"]} == {"student", "other"}
    student_node = next(p for p in top["ancestors"] if p["model"] == "student")
    assert student_node["parents"][0]["model"] == "teacher"
    rendered = nexus("lineage", "teacher").stdout
    assert "student@" in rendered
    assert "merged@" in rendered

    assert (
        "merge needs two"
        in nexus(
            "store",
            str(tmp_path / "merged.pt"),
            "x",
            "--parent",
            "teacher",
            "--lineage-type",
            "merge",
            code=2,
        ).stderr
    )
    assert (
        "lineage-type must be"
        in nexus(
            "store",
            str(tmp_path / "merged.pt"),
            "x",
            "--parent",
            "teacher",
            "--lineage-type",
            "copy",
            code=2,
        ).stderr
    )


def test_a_store_that_would_make_a_cycle_is_refused(repo: Path, tmp_path: Path) -> None:
    registry = Registry(repo)
    (tmp_path / "a.pt").write_bytes(b"a" * 100)
    registry.store(tmp_path / "a.pt", "a")
    head = new_commit(repo, "next")
    # A hand-merged metadata file claims a descends from b at the commit about to be stored.
    meta = json.loads((repo / ".nexus_meta.json").read_text())
    meta["models"][0]["parents"] = [{"model": "b", "commit_hash": head}]
    (repo / ".nexus_meta.json").write_text(json.dumps(meta))
    (tmp_path / "b.pt").write_bytes(b"b" * 100)
    with pytest.raises(ConflictError, match="its own ancestor"):
        registry.store(tmp_path / "b.pt", "b", parents=["a"], lineage_type="fine_tune")
    assert [e.model_name for e in registry.list()] == ["a"]


def generate(repo: Path, count: int = 60) -> list[dict[str, Any]]:
    models = []
    for i in range(count):
        commit = f"{i:040x}"
        name = f"gen{i // 4:02d}"  # four versions a model: one each in production and staging
        models.append(
            {
                "commit_hash": commit,
                "model_name": name,
                "storage_uri": f"{name}/{commit}.pt",
                "file_size": 10,
                "timestamp": f"2024-02-{1 + i % 28:02d}T00:00:{i % 60:02d}+00:00",
                "is_latest": i == count - 1,
                "metrics": {"accuracy": (i * 7 % 100) / 100},
                "tags": {"team": "a" if i % 3 else "b"},
                "stage": ["production", "staging", None, "archived"][i % 4],
                "status": ["approved", "pending_review"][i % 2],
                "owner": "ada" if i % 5 else "bob",
            }
        )
    (repo / ".nexus_meta.json").write_text(json.dumps({"models": models}))
    return models


def test_queries_combine_filters(repo: Path) -> None:
    models = generate(repo)
    got = json.loads(
        nexus(
            "list",
            "--stage",
            "production",
            "--metric",
            "accuracy>=0.3",
            "--metric",
            "accuracy<0.9",
            "--tag",
            "team=a",
            "--json",
        ).stdout
    )
    want = {
        m["commit_hash"]
        for m in models
        if m["stage"] == "production"
        and 0.3 <= m["metrics"]["accuracy"] < 0.9
        and m["tags"]["team"] == "a"
    }
    assert {e["commit_hash"] for e in got} == want
    assert want

    top = json.loads(
        nexus("list", "--status", "approved", "--sort", "accuracy", "--limit", "5", "--json").stdout
    )
    scores = [e["metrics"]["accuracy"] for e in top]
    assert scores == sorted(scores, reverse=True)
    assert len(top) == 5
    best = max(m["metrics"]["accuracy"] for m in models if m["status"] == "approved")
    assert scores[0] == best

    recent = json.loads(nexus("list", "--since", "2024-02-27", "--owner", "bob", "--json").stdout)
    assert recent
    assert all(e["owner"] == "bob" and e["timestamp"] >= "2024-02-27" for e in recent)

    from control_plane import query

    api = Registry(repo).list(filters=[query.stage("staging"), query.tag("team=b")])
    assert {e.commit_hash for e in api} == {
        m["commit_hash"] for m in models if m["stage"] == "staging" and m["tags"]["team"] == "b"
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "accuracy>>0.9"], "not a metric filter"),
        (["--metric", "accuracy>=high"], "not a metric filter"),
        (["--stage", "prod"], "--stage must be one of"),
        (["--status", "ok"], "--status must be one of"),
        (["--tag", "team"], "KEY=VALUE"),
        (["--since", "last week"], "--since expects a date"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_malformed_filters_are_clear_errors(repo: Path, args: list[str], message: str) -> None:
    generate(repo, 5)
    assert message in nexus("list", *args, code=2).stderr


def test_old_and_seed_files_take_the_new_commands(repo: Path) -> None:
    seed = {
        "models": [
            {
                "commit_hash": "abc123def",
                "model_name": "my_model",
                "storage_uri": "my_model/abc123def.pt",
                "file_size": 1,
                "timestamp": "2024-01-15T10:30:00",
                "is_latest": True,
            }
        ]
    }
    (repo / ".nexus_meta.json").write_text(json.dumps(seed))
    assert "abc123d" in nexus("list").stdout
    nexus("approve", "abc123", "my_model")
    nexus("promote", "abc123", "my_model", "--stage", "production")
    listed = json.loads(nexus("list", "--stage", "production", "--json").stdout)
    assert [e["commit_hash"] for e in listed] == ["abc123def"]
    assert json.loads(nexus("lineage", "my_model@abc123", "--json").stdout)["ancestors"] == []
    assert len(json.loads(nexus("history", "my_model", "--json").stdout)) == 2


def test_history_orders_same_second_events_across_versions(repo: Path, tmp_path: Path) -> None:
    # Issue 10: events within one second used to sort by time alone, version by version.
    (tmp_path / "a.pt").write_bytes(b"a" * 64)
    (tmp_path / "b.pt").write_bytes(b"b" * 64)
    nexus("store", str(tmp_path / "a.pt"), "m")
    c1 = git(repo, "rev-parse", "HEAD")
    c2 = new_commit(repo, "v2")
    nexus("store", str(tmp_path / "b.pt"), "m")
    steps = [
        ("promote", c2[:7], "m", "--stage", "staging"),
        ("promote", c1[:7], "m", "--stage", "staging"),
        ("approve", c2[:7], "m"),
        ("rollback", c1[:7], "m"),
        ("promote", c2[:7], "m", "--stage", "production"),
    ]
    for step in steps:
        nexus(*step)
    events = json.loads(nexus("history", "m", "--json").stdout)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    moves = [(e["commit_hash"], e["what"], e["to"]) for e in events]
    # The order of the commands, whichever version each touched (last occurrence of each):
    expected = [
        (c2, "stage", "staging"),
        (c1, "stage", "staging"),
        (c2, "status", "approved"),
        (c1, "latest", True),
        (c2, "stage", "production"),
    ]
    positions = [len(moves) - 1 - moves[::-1].index(move) for move in expected]
    assert positions == sorted(positions)


def test_reject_reason_is_in_the_history_event(repo: Path, model_file: Path) -> None:
    nexus("store", str(model_file), "m")
    nexus("reject", "latest", "m", "--reason", "accuracy regressed on the holdout set")
    events = json.loads(nexus("history", "m", "--json").stdout)
    rejected = [e for e in events if e["to"] == "rejected"]
    assert rejected[0]["reason"] == "accuracy regressed on the holdout set"


def test_delete_guards_production_moves_latest_and_keeps_history(
    repo: Path, tmp_path: Path
) -> None:
    blob = tmp_path / "m.pt"
    blob.write_bytes(b"one")
    nexus("store", str(blob), "m", "-q")
    new_commit(repo, "two")
    blob.write_bytes(b"two")
    nexus("store", str(blob), "m", "-q")
    nexus("promote", "v2", "m", "--stage", "production")
    refused = nexus("delete", "m@v2", code=1).stderr
    assert "holds production" in refused
    assert "--force" in refused
    out = nexus("delete", "m@production", "--force").stdout
    assert "Latest m is now v1" in out
    assert show("latest")["version"] == 1
    new_commit(repo, "three")
    blob.write_bytes(b"three")
    nexus("store", str(blob), "m", "-q")
    assert show("latest")["version"] == 3  # a deleted version's number is never reused
    nexus("delete", "m@v1")
    nexus("delete", "m@v3")
    assert json.loads(nexus("list", "--json").stdout) == []
    history = json.loads(nexus("history", "m", "--json").stdout)
    assert [e["to"] for e in history if e["what"] == "stored"] == [1, 2, 3]
    assert [e["from"] for e in history if e["what"] == "deleted"] == [2, 1, 3]
    assert "no model named" in nexus("load", "m@v2", "x.pt", code=1).stderr


def test_events_after_a_deleted_only_version_keep_counting(repo: Path, tmp_path: Path) -> None:
    """Found by the Registry state machine: the next `seq` ignored the tombstones, so a model
    stored again after its only version was deleted numbered its events from 1 again."""
    blob = tmp_path / "m.pt"
    blob.write_bytes(b"one")
    registry = Registry(repo)
    first = registry.store(blob, "m").entry
    registry.delete(f"m@{first.commit_hash}")
    new_commit(repo, "two")
    blob.write_bytes(b"two")
    registry.store(blob, "m")
    document = json.loads((repo / ".nexus_meta.json").read_text())
    seqs = [
        e["seq"] for entry in [*document["models"], *document["deleted"]] for e in entry["history"]
    ]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
