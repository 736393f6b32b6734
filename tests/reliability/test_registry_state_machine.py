"""The Registry API driven by hypothesis through random sequences of store, load, promote,
approve, reject, rollback and delete, on a real Git repository and the local store, and
checked after every step against a model of what the registry should hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from control_plane import ConflictError, Registry
from control_plane.metadata import MetadataFile
from tests.harness.repos import git_repo

MODELS = ("alpha", "beta")


@dataclass
class Version:
    """What the model expects of one stored version."""

    model: str
    commit: str
    number: int
    content: bytes
    stage: str | None = None
    status: str = "pending_review"
    deleted: bool = False


class RegistryMachine(RuleBasedStateMachine):
    versions = Bundle("versions")

    def __init__(self) -> None:
        super().__init__()
        self.work = Path(tempfile.mkdtemp(prefix="nexus-machine-"))
        self.repo = git_repo(self.work / "project")
        self.registry = Registry(self.repo)
        self.expected: list[Version] = []
        self.latest: dict[str, Version | None] = dict.fromkeys(MODELS)
        self.numbers: dict[str, int] = dict.fromkeys(MODELS, 0)

    def teardown(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def _git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.repo, check=True, capture_output=True)
        return done.stdout.decode().strip()

    def _live(self, model: str) -> list[Version]:
        return [v for v in self.expected if v.model == model and not v.deleted]

    # -- rules -----------------------------------------------------------------

    @rule(target=versions, model=st.sampled_from(MODELS), size=st.integers(1, 4096))
    def store(self, model: str, size: int) -> Version:
        self._git("commit", "-q", "--allow-empty", "-m", f"train {model}")
        commit = self._git("rev-parse", "HEAD")
        content = os.urandom(size)
        path = self.work / f"{model}.bin"
        path.write_bytes(content)
        entry = self.registry.store(path, model).entry
        self.numbers[model] += 1
        version = Version(model, commit, self.numbers[model], content)
        assert (entry.commit_hash, entry.version) == (commit, version.number)
        self.expected.append(version)
        self.latest[model] = version
        return version

    @rule(version=versions)
    def load(self, version: Version) -> None:
        dest = self.work / "loaded.bin"
        if version.deleted:
            with pytest.raises(Exception, match=r"no version|not found|deleted|no model"):
                self.registry.load(version.commit, dest, model_name=version.model)
            return
        self.registry.load(version.commit, dest, model_name=version.model)
        assert dest.read_bytes() == version.content

    @rule(version=versions, stage=st.sampled_from(["staging", "production"]))
    def promote(self, version: Version, stage: str) -> None:
        if version.deleted:
            return
        self.registry.promote(version.commit, version.model, stage)
        for other in self._live(version.model):
            if other.stage == stage:
                other.stage = None
        version.stage = stage

    @rule(version=versions)
    def approve(self, version: Version) -> None:
        if not version.deleted:
            self.registry.approve(version.commit, version.model)
            version.status = "approved"

    @rule(version=versions, reason=st.sampled_from(["worse on the holdout set", "too slow"]))
    def reject(self, version: Version, reason: str) -> None:
        if not version.deleted:
            self.registry.reject(version.commit, version.model, reason)
            version.status = "rejected"

    @rule(version=versions)
    def rollback(self, version: Version) -> None:
        if not version.deleted:
            self.registry.rollback(version.commit, version.model)
            self.latest[version.model] = version

    @precondition(lambda self: any(not v.deleted for v in self.expected))
    @rule(version=consumes(versions), force=st.booleans())
    def delete(self, version: Version, force: bool) -> None:
        if version.deleted:
            return
        ref = f"{version.model}@{version.commit}"
        if version.stage == "production" and not force:
            with pytest.raises(ConflictError, match="holds production"):
                self.registry.delete(ref)
            return
        self.registry.delete(ref, force=force)
        version.deleted, version.stage = True, None
        if self.latest[version.model] is version:
            others = self._live(version.model)
            self.latest[version.model] = max(others, key=lambda v: v.number) if others else None

    # -- what must hold after every step ------------------------------------------

    @invariant()
    def the_registry_matches_the_model(self) -> None:
        entries = {(e.model_name, e.commit_hash): e for e in self.registry.list()}
        live = {(v.model, v.commit): v for v in self.expected if not v.deleted}
        assert set(entries) == set(live)
        for key, version in live.items():
            entry = entries[key]
            assert entry.version == version.number
            assert entry.stage == version.stage
            assert entry.status == version.status
            assert entry.is_latest == (self.latest[version.model] is version)

    @invariant()
    def stages_are_unique_and_history_is_ordered(self) -> None:
        document = MetadataFile(self.repo / ".nexus_meta.json", self.work / "lock").read()
        for model in MODELS:
            for stage in ("staging", "production"):
                assert sum(1 for e in document.versions(model) if e.stage == stage) <= 1
        seqs = sorted(
            event["seq"]
            for e in (*document.entries, *document.deleted)
            for event in e.history or ()
        )
        assert seqs == list(range(1, len(seqs) + 1))  # every change recorded once, in order


RegistryMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_the_registry_api_matches_its_model = RegistryMachine.TestCase
