"""Real Git repositories for the tests and the benches: made, committed to, filled."""

from __future__ import annotations

import subprocess
from pathlib import Path

from control_plane import Registry


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout
    return out.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for args in (
        ["init", "-q"],
        ["config", "user.name", "bench"],
        ["config", "user.email", "bench@example.com"],
        ["commit", "-q", "--allow-empty", "-m", "bench"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True)
    return path


def store_versions(repo: Path, model: str, count: int, tmp: Path) -> None:
    """`count` versions of `model`, each at its own commit, with an accuracy metric."""
    for i in range(count):
        subprocess.run(
            ["git", "commit", "-q", "--allow-empty", "-m", f"train {model} {i}"],
            cwd=repo,
            check=True,
        )
        path = tmp / f"{model}-{i}.bin"
        path.write_bytes(f"{model} weights {i}".encode())
        Registry(repo).store(path, model, metrics={"accuracy": 0.80 + i / 100, "loss": 1 - i / 10})
    commit_all(repo, f"store {model}")
