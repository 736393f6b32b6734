"""Noticing changes: the metadata file's content, and a Git remote fetched into a workspace."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from model_server.delivery.watch import FileWatcher, GitFollower
from model_server.errors import FollowError
from tests.conftest import commit_all, git


def test_a_file_counts_as_changed_only_when_its_content_does(tmp_path: Path) -> None:
    path = tmp_path / ".nexus_meta.json"
    watcher = FileWatcher(path)
    assert watcher.changed()  # the first look
    assert not watcher.changed()
    path.write_text("{}")
    assert watcher.changed()
    assert not watcher.changed()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    path.write_text("{}")  # rewritten, same bytes
    assert not watcher.changed()
    path.write_text('{"models": []}')
    assert watcher.changed()
    path.unlink()
    assert watcher.changed()
    assert not watcher.changed()


def test_a_follower_clones_then_moves_to_the_remote_tip(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    (repo / "a.txt").write_text("one")
    commit_all(repo, "one")
    git(repo, "push", "-q", "origin", "main")
    workspace = tmp_path / "server"
    follower = GitFollower(workspace, str(remote), "main")
    follower.pull()
    assert (workspace / "a.txt").read_text() == "one"
    (repo / "a.txt").write_text("two")
    commit_all(repo, "two")
    git(repo, "push", "-q", "-f", "origin", "main")
    follower.pull()
    assert (workspace / "a.txt").read_text() == "two"


def test_an_unreachable_remote_is_one_sentence_and_leaves_the_workspace(tmp_path: Path) -> None:
    follower = GitFollower(tmp_path / "ws", str(tmp_path / "missing.git"), "main")
    with pytest.raises(FollowError, match=r"^git fetch .*missing\.git main failed: "):
        follower.pull()


def test_which_refs_a_server_follows() -> None:
    """Refs that can move are followed; a version number or a commit names one version."""
    from model_server.settings import ServerSettings

    moving = ("latest", "production", "champion", "m@champion", "m@staging")
    fixed = ("v3", "m@v3", "a1b2c3d", "m@a1b2c3d")
    assert all(ServerSettings(model_ref=ref).follows for ref in moving)
    assert not any(ServerSettings(model_ref=ref).follows for ref in fixed)
    assert ServerSettings(model_ref="v3", follow=True).follows
