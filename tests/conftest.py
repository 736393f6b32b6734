"""Shared fixtures: a clean environment and real Git repositories in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.harness.repos import commit_all as commit_all
from tests.harness.repos import git as git

# In CI every property test, state machine and schemathesis run draws the same examples
# (a failure there reproduces, a pass is not luck); locally each run explores anew.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

pytest_plugins = [
    "tests.cloud",  # moto and GCS emulator fixtures, session-scoped
    "tests.other_user",  # shared_tmp: a folder another uid may enter
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: `make test` runs on several workers (pytest-xdist), and a
    minute-long test handed out last would be the whole run's tail."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


_LEAKY_PREFIXES = ("AWS_", "GOOGLE_", "NEXUS_", "STORAGE_EMULATOR_HOST", "GIT_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """A developer's credentials or NEXUS_* settings must never reach a test."""
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("COLUMNS", "200")


def make_repo(repo: Path) -> Path:
    """A new Git repository at `repo`, with no commits."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.com")
    return repo


@pytest.fixture
def empty_repo(tmp_path: Path) -> Path:
    """A Git repository with no commits."""
    return make_repo(tmp_path / "project")


@pytest.fixture
def repo(empty_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Git repository with one commit, as the working directory."""
    (empty_repo / "train.py").write_text("print('training')\n")
    commit_all(empty_repo, "initial")
    monkeypatch.chdir(empty_repo)
    return empty_repo


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """An untracked model binary outside the repository."""
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(64 * 1024))
    return path
