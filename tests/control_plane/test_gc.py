"""Garbage collection on real repositories: nothing reachable is ever deleted."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from control_plane import ModelEntry, Registry
from control_plane.cli import app
from control_plane.storage import ObjectInfo
from control_plane.storage.local import LocalBackend
from tests.conftest import commit_all, git

runner = CliRunner()
DAY = 86400.0


def age_store(store: Path, seconds: float) -> None:
    """Make every object look `seconds` old by the store's own time."""
    past = time.time() - seconds
    for path in store.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def build(root: Path, plan: list[tuple[str, bool]]) -> tuple[Path, dict[str, bool]]:
    """A repo storing one version per step; each step's commit may get a ref (branch or
    tag) and the step's version may be deleted on main later. Returns {key: reachable}."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Ada")
    git(repo, "config", "user.email", "ada@example.com")
    (repo / "train.py").write_text("0\n")
    commit_all(repo, "initial")
    keys = []
    for i, (ref, _) in enumerate(plan):
        (repo / "train.py").write_text(f"step {i}\n")
        commit_all(repo, f"train {i}")
        blob = root / f"{i}.pt"
        blob.write_bytes(os.urandom(16))
        entry = Registry(repo).store(blob, "m").entry
        keys.append(entry)
        commit_all(repo, f"store {i}")
        if ref == "branch":
            git(repo, "branch", f"keep-{i}")
        elif ref == "tag":
            git(repo, "tag", f"v{i}")
    for entry, (_, deleted) in zip(keys, plan, strict=True):
        if deleted:
            Registry(repo).delete(f"m@{entry.commit_hash}", force=True)
    if git(repo, "status", "--porcelain"):
        commit_all(repo, "deletions")
    reachable: dict[str, bool] = {}
    for i, (entry, (_, deleted)) in enumerate(zip(keys, plan, strict=True)):
        # a ref made at step j sees every version stored up to j
        later_ref = any(r != "none" for r, _ in plan[i:])
        reachable[entry.storage_uri] = not deleted or later_ref
    return repo, reachable


steps = st.lists(
    st.tuples(st.sampled_from(["none", "branch", "tag"]), st.booleans()), min_size=1, max_size=6
)


@given(plan=steps)
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_gc_never_deletes_what_a_ref_reaches(tmp_path_factory, plan) -> None:
    root = tmp_path_factory.mktemp("gc")
    repo, reachable = build(root, plan)
    store = repo / ".nexus" / "store"
    age_store(store, 30 * DAY)
    registry = Registry(repo)
    found = registry.gc_plan(7 * DAY)
    assert {c.key for c in found.candidates} == {k for k, r in reachable.items() if not r}
    registry.gc_collect(found)
    for key, kept in reachable.items():
        assert (store / key).is_file() == kept, key
    assert all(r.error is None for r in Registry(repo).verify())  # live versions intact


class StoresWhileListed(LocalBackend):
    """A real local store with another writer: an object appears while gc lists."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        source = self.root.parent / "late.bin"
        source.write_bytes(b"late")
        self.upload(source, f"{prefix}late.bin", sha256="0" * 64)
        yield from super().list(prefix)


def test_young_and_concurrently_stored_objects_survive(repo: Path, tmp_path: Path) -> None:
    blob = tmp_path / "m.pt"
    blob.write_bytes(b"one")
    first = Registry(repo).store(blob, "m").entry
    commit_all(repo, "store")
    (repo / "train.py").write_text("2\n")
    commit_all(repo, "more")
    blob.write_bytes(b"two")
    second = Registry(repo).store(blob, "m").entry
    Registry(repo).delete(f"m@{second.commit_hash}")
    commit_all(repo, "stored and deleted")
    store = repo / ".nexus" / "store"

    # Unreferenced but young: kept by the grace period, deleted once old enough.
    assert Registry(repo).gc_plan(7 * DAY).candidates == []
    listed = json.loads(runner.invoke(app, ["gc", "--grace", "1h", "--json"]).stdout)
    assert listed["young"] == 1
    assert listed["candidates"] == []

    age_store(store, 2 * DAY)
    registry = Registry(repo, backend=StoresWhileListed(store))
    found = registry.gc_plan(DAY)
    assert [c.key for c in found.candidates] == [second.storage_uri]
    registry.gc_collect(found)
    assert (store / "m" / "late.bin").is_file()  # stored while gc ran
    assert (store / first.storage_uri).is_file()
    assert not (store / second.storage_uri).exists()


@pytest.fixture
def old_garbage(repo: Path, tmp_path: Path) -> ModelEntry:
    """A version stored and deleted a month ago: its object is garbage."""
    blob = tmp_path / "m.pt"
    blob.write_bytes(b"bytes")
    entry = Registry(repo).store(blob, "m").entry
    Registry(repo).delete(f"m@{entry.commit_hash}")
    commit_all(repo, "stored and deleted")
    age_store(repo / ".nexus" / "store", 30 * DAY)
    return entry


def test_an_object_reused_after_planning_is_kept(repo: Path, old_garbage: ModelEntry) -> None:
    entry = old_garbage
    registry = Registry(repo)
    found = registry.gc_plan(DAY)
    assert len(found.candidates) == 1
    registry.objects.reuse(entry.storage_uri)  # a concurrent store of the same bytes
    outcome = registry.gc_collect(found)
    assert outcome.deleted == []
    assert outcome.kept == [entry.storage_uri]


def test_gc_cli_is_a_dry_run_without_yes(repo: Path, old_garbage: ModelEntry) -> None:
    entry = old_garbage
    dry = runner.invoke(app, ["gc"])
    assert dry.exit_code == 0
    assert "Would delete 1 objects" in dry.stdout
    assert (repo / ".nexus" / "store" / entry.storage_uri).is_file()
    done = runner.invoke(app, ["gc", "--yes"])
    assert "Deleted 1 objects" in done.stdout
    assert not (repo / ".nexus" / "store" / entry.storage_uri).exists()
    bad = runner.invoke(app, ["gc", "--grace", "soon"])
    assert bad.exit_code == 2
    assert "--grace expects a duration" in bad.stderr
