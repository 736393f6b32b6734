"""Merging `.nexus_meta.json` across branches: real Git, the real driver, random histories.

The state machine stores, promotes, approves, rejects, rolls back, archives, aliases
and deletes on two branches of a real repository, then merges them both ways with
plain `git merge`. The expected state comes from an independent reading of the
documented rule (the later event wins, by the events' own record), and the same
merge done as a forge would (a text merge, no driver) must resolve to the same
result through `nexus resolve`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)
from typer.testing import CliRunner

from control_plane import Registry
from control_plane.cli import app
from control_plane.metadata import parse_document
from control_plane.metadata.document import consistency_problem
from control_plane.metadata.entry import parse_timestamp
from tests.conftest import commit_all, git

runner = CliRunner()
SEED_FIELDS = {
    "commit_hash": str,
    "model_name": str,
    "storage_uri": str,
    "file_size": int,
    "timestamp": str,
    "is_latest": bool,
}


def state_of(raw: dict[str, Any]) -> dict[str, Any]:
    """What the merge rule decides, per version: latest, stage, status, aliases; deleted."""
    return {
        "live": {
            (m["model_name"], m["commit_hash"]): (
                m["is_latest"],
                m.get("stage"),
                m.get("status"),
                tuple(m.get("aliases") or ()),
            )
            for m in raw["models"]
        },
        "deleted": {(m["model_name"], m["commit_hash"]) for m in raw.get("deleted", [])},
    }


def expected_state(sides: list[dict[str, Any]]) -> dict[str, Any]:
    """The documented rule, read independently: every event of both sides, in time order;
    the last claim of latest, a stage or an alias wins unless its version was deleted
    before it; statuses are the last set; a delete is final."""
    versions: dict[tuple[str, str], dict[str, Any]] = {}
    events: dict[bytes, tuple[Any, tuple[str, str], dict[str, Any]]] = {}
    for raw in sides:
        for m in [*raw["models"], *raw.get("deleted", [])]:
            key = (m["model_name"], m["commit_hash"])
            versions.setdefault(key, m)
            for e in m.get("history", []):
                ident = json.dumps({k: v for k, v in e.items() if k != "seq"}, sort_keys=True)
                events[ident.encode()] = ((parse_timestamp(e["when"]), e["seq"]), key, e)
    timeline = sorted(events.values(), key=lambda item: item[0])
    regs: dict[tuple[str, str], list[Any]] = {key: [False, None, None, set()] for key in versions}
    gone: set[tuple[str, str]] = set()
    for _, key, e in timeline:
        if key in gone:
            continue
        siblings = [k for k in regs if k[0] == key[0]]
        what, to = e["what"], e["to"]
        if what == "deleted":
            gone.add(key)
            regs[key] = [False, None, None, set()]
        elif what == "latest" and to is True:
            for k in siblings:
                regs[k][0] = False
            regs[key][0] = True
        elif what == "latest":
            regs[key][0] = False
        elif what == "stage":
            if to in ("staging", "production"):
                for k in siblings:
                    if regs[k][1] == to:
                        regs[k][1] = None
            regs[key][1] = to
        elif what == "status":
            regs[key][2] = to
        elif what == "alias" and to is not None:
            for k in siblings:
                regs[k][3].discard(to)
            regs[key][3].add(to)
        elif what == "alias":
            regs[key][3].discard(e["from"])
    live = {k: v for k, v in regs.items() if k not in gone}
    for model in {k[0] for k in live}:
        keys = [k for k in live if k[0] == model]
        if not any(live[k][0] for k in keys):
            newest = max(keys, key=lambda k: (parse_timestamp(versions[k]["timestamp"]), k[1]))
            live[newest][0] = True
    return {
        "live": {k: (v[0], v[1], v[2], tuple(sorted(v[3]))) for k, v in live.items()},
        "deleted": gone,
    }


class TwoBranches(RuleBasedStateMachine):
    """Random registry work on branches `a` and `b` of one real repository."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(os.environ["NEXUS_TEST_MERGE_ROOT"])
        self.counter = 0

    @initialize()
    def make_repo(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.repo = self.root / "repo"
        self.repo.mkdir(parents=True)
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "config", "user.name", "Ada")
        git(self.repo, "config", "user.email", "ada@example.com")
        (self.repo / "train.py").write_text("start\n")
        commit_all(self.repo, "initial")
        self.branch = "main"
        self._store("m")
        self._store("n")
        git(self.repo, "branch", "a")
        git(self.repo, "branch", "b")
        self.versions: dict[str, list[str]] = {"a": [], "b": []}

    def _switch(self, branch: str) -> None:
        if branch != self.branch:
            git(self.repo, "checkout", "-q", branch)
            self.branch = branch

    def _store(self, model: str) -> str:
        self.counter += 1
        # each branch changes its own code file, so the code always merges cleanly
        (self.repo / f"train_{self.branch}.py").write_text(f"step {self.counter}\n")
        commit_all(self.repo, f"train {self.counter}")
        blob = self.root / f"blob{self.counter}.pt"
        blob.write_bytes(os.urandom(32))
        entry = Registry(self.repo).store(blob, model).entry
        commit_all(self.repo, f"store {self.counter}")
        return entry.commit_hash

    def _known(self) -> list[tuple[str, str]]:
        raw = json.loads((self.repo / ".nexus_meta.json").read_text())
        return [(m["model_name"], m["commit_hash"]) for m in raw["models"]]

    def _act(self, branch: str, pick: int, action: Any) -> None:
        self._switch(branch)
        known = self._known()
        model, commit = known[pick % len(known)]
        action(Registry(self.repo), model, commit[:12])
        if git(self.repo, "status", "--porcelain"):
            commit_all(self.repo, f"change {self.counter}")

    branches = st.sampled_from(["a", "b"])
    picks = st.integers(0, 50)

    @rule(branch=branches, model=st.sampled_from(["m", "n"]))
    def store(self, branch: str, model: str) -> None:
        self._switch(branch)
        self._store(model)

    @rule(branch=branches, pick=picks, stage=st.sampled_from(["staging", "production"]))
    def promote(self, branch: str, pick: int, stage: str) -> None:
        self._act(branch, pick, lambda r, m, c: r.promote(c, m, stage))

    @rule(branch=branches, pick=picks)
    def archive(self, branch: str, pick: int) -> None:
        self._act(branch, pick, lambda r, m, c: r.archive(c, m))

    @rule(branch=branches, pick=picks, approve=st.booleans())
    def review(self, branch: str, pick: int, approve: bool) -> None:
        self._act(
            branch,
            pick,
            lambda r, m, c: r.approve(c, m) if approve else r.reject(c, m, "worse"),
        )

    @rule(branch=branches, pick=picks)
    def rollback(self, branch: str, pick: int) -> None:
        self._act(branch, pick, lambda r, m, c: r.rollback(c, m))

    @rule(branch=branches, pick=picks, alias=st.sampled_from(["champion", "candidate"]))
    def alias(self, branch: str, pick: int, alias: str) -> None:
        self._act(branch, pick, lambda r, m, c: r.set_alias(f"{m}@{c}", alias))

    @rule(branch=branches, pick=picks, alias=st.sampled_from(["champion", "candidate"]))
    def unalias(self, branch: str, pick: int, alias: str) -> None:
        def remove(r: Registry, m: str, c: str) -> None:
            if alias in (r.resolve(c, m).aliases or ()):
                r.remove_alias(m, alias)

        self._act(branch, pick, remove)

    @rule(branch=branches, pick=picks)
    def delete(self, branch: str, pick: int) -> None:
        self._switch(branch)
        if len(self._known()) > 2:
            self._act(branch, pick, lambda r, m, c: r.delete(f"{m}@{c}", force=True))

    def teardown(self) -> None:
        """After each random history: merge both ways and check (per step would cost
        ten times as many merges for little more)."""
        if hasattr(self, "repo"):
            self.merges_cleanly_both_ways()

    def merges_cleanly_both_ways(self) -> None:
        sides = [
            json.loads(git(self.repo, "show", f"{branch}:.nexus_meta.json"))
            for branch in ("a", "b")
        ]
        expected = expected_state(sides)
        results = []
        for ours, theirs in (("a", "b"), ("b", "a")):
            self._switch(ours)
            git(self.repo, "checkout", "-q", "-B", f"merge-{ours}")
            self.branch = f"merge-{ours}"
            merged = subprocess.run(
                ["git", "merge", "-q", "--no-edit", theirs],
                cwd=self.repo,
                capture_output=True,
                text=True,
            )
            assert merged.returncode == 0, merged.stdout + merged.stderr
            data = (self.repo / ".nexus_meta.json").read_bytes()
            assert b"<<<<<<<" not in data
            raw = json.loads(data)
            results.append(raw)
            for m in raw["models"]:  # still the seed's format
                for name, kind in SEED_FIELDS.items():
                    assert isinstance(m[name], kind), (name, m)
            assert consistency_problem(parse_document(data, Path("merged"))) is None
            state = state_of(raw)
            assert state == expected
            numbers = [
                (m["model_name"], m["version"]) for m in raw["models"] + raw.get("deleted", [])
            ]
            assert len(numbers) == len(set(numbers))
            git(self.repo, "reset", "-q", "--hard")
            self._switch(ours)
        assert state_of(results[0]) == state_of(results[1])
        # No version lost: each side's live versions are live unless the other deleted them.
        for side in sides:
            for m in side["models"]:
                key = (m["model_name"], m["commit_hash"])
                assert key in expected["live"] or key in expected["deleted"]


@pytest.mark.long
def test_merges_never_conflict_and_follow_the_rule(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEXUS_TEST_MERGE_ROOT", str(tmp_path / "machine"))
    run_state_machine_as_test(
        TwoBranches,
        settings=settings(
            max_examples=12,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def nexus(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


@pytest.fixture
def diverged(repo: Path, tmp_path: Path) -> Path:
    """Branches `a` and `b` that each stored, promoted and aliased the same model."""
    blob = tmp_path / "m.pt"

    def store(text: str) -> str:
        (repo / f"{text}.py").write_text(text)  # code changes that merge cleanly
        commit_all(repo, text)
        blob.write_bytes(os.urandom(64))
        nexus("store", str(blob), "m", "-q")
        return commit_all(repo, f"store {text}")

    store("base")
    git(repo, "checkout", "-q", "-b", "a")
    store("a1")
    nexus("promote", "latest", "m", "--stage", "production")
    nexus("alias", "set", "m@v2", "champion")
    commit_all(repo, "a promotes")
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-q", "-b", "b")
    store("b1")
    store("b2")
    nexus("promote", "v1", "m", "--stage", "production")
    nexus("delete", "m@v3", "--force")
    commit_all(repo, "b promotes v1, deletes v3")
    return repo


def test_driver_merge_renumbers_and_says_so(diverged: Path) -> None:
    git(diverged, "checkout", "-q", "a")
    merged = subprocess.run(
        ["git", "merge", "--no-edit", "b"], cwd=diverged, capture_output=True, text=True
    )
    assert merged.returncode == 0, merged.stderr
    assert "is now v4" in merged.stderr  # b's v2 collided with a's v2, stored earlier
    listed = json.loads(nexus("list", "-m", "m", "--json").stdout)
    assert len(listed) == 3  # v1, a's v2, b's v2 (now v4); b's v3 is deleted
    assert nexus("show", "m@production", "--json").stdout == nexus("show", "m@v1", "--json").stdout
    history = json.loads(nexus("history", "m", "--json").stdout)
    assert any(e["what"] == "version" and e["who"] == "nexus merge" for e in history)


@pytest.mark.parametrize("style", ["merge", "diff3"])
def test_a_text_merge_resolves_to_what_the_driver_made(diverged: Path, style: str) -> None:
    repo = diverged
    git(repo, "checkout", "-q", "a")
    git(repo, "checkout", "-q", "-b", "with-driver")
    git(repo, "merge", "-q", "--no-edit", "b")
    by_driver = (repo / ".nexus_meta.json").read_bytes()

    git(repo, "checkout", "-q", "a")
    git(repo, "checkout", "-q", "-b", "as-a-forge")
    git(repo, "config", "--unset", "merge.nexus.driver")  # a clone without the driver
    git(repo, "config", "--unset", "merge.nexus.name")
    git(repo, "config", "merge.conflictStyle", style)
    text = subprocess.run(["git", "merge", "--no-edit", "b"], cwd=repo, capture_output=True)
    assert text.returncode == 1
    conflicted = (repo / ".nexus_meta.json").read_bytes()
    assert b"<<<<<<<" in conflicted

    failed = nexus("list", code=1).stderr
    assert "unresolved merge conflict" in failed
    assert "nexus resolve" in failed
    out = nexus("resolve").stdout
    assert "conflict stages" in out
    assert (repo / ".nexus_meta.json").read_bytes() == by_driver

    # The same from the markers alone (a file committed or copied with them in).
    git(repo, "add", ".nexus_meta.json")  # the index no longer has the stages
    (repo / ".nexus_meta.json").write_bytes(conflicted)
    assert "conflict markers" in nexus("resolve").stdout
    assert state_of(json.loads((repo / ".nexus_meta.json").read_bytes())) == state_of(
        json.loads(by_driver)
    )
    assert "no conflict" in nexus("resolve").stdout


def test_a_hand_merge_is_named_and_repaired(repo: Path, tmp_path: Path) -> None:
    blob = tmp_path / "m.pt"
    blob.write_bytes(b"x" * 10)
    nexus("store", str(blob), "m", "-q")
    meta = repo / ".nexus_meta.json"
    raw = json.loads(meta.read_text())
    twin = dict(raw["models"][0], commit_hash="f" * 40, version=2)
    raw["models"].append(twin)  # two latest versions: a careless hand merge
    meta.write_text(json.dumps(raw))
    failed = nexus("list", code=1).stderr
    assert "two latest versions" in failed
    assert "nexus resolve" in failed
    assert "duplicates" in nexus("resolve").stdout
    assert len(json.loads(nexus("list", "--json").stdout)) == 2
    assert sum(e["is_latest"] for e in json.loads(meta.read_text())["models"]) == 1


def test_shallow_clone_lists_loads_and_merges_nothing_needed(repo: Path, tmp_path: Path) -> None:
    blob = tmp_path / "m.pt"
    blob.write_bytes(os.urandom(100))
    nexus("store", str(blob), "m", "-q")
    commit_all(repo, "store")
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", repo.as_uri(), str(clone)], check=True)
    os.chdir(clone)
    assert "v1" in nexus("list").stdout
    nexus("init")
    assert "merge=nexus" in (clone / ".gitattributes").read_text()
    assert git(clone, "config", "merge.nexus.driver").endswith("%O %A %B %P")
    plan = json.loads(nexus("gc", "--json").stdout)
    assert plan["candidates"] == []
