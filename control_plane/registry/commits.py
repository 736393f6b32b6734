"""A registry change as one Git commit, and the push that shares it.

Used by the registry's web server, where every lifecycle action becomes a commit
authored by the person who made it. Only the files the registry writes are
committed (`.nexus_meta.json`, and `.gitignore`/`.gitattributes` when setting the
clone up touched them). A rejected push is answered by fetching, merging with the
metadata merge driver (`nexus init` declares it: histories united, state replayed)
and pushing again.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from control_plane.core.errors import GitError
from control_plane.registry.git import OWN_FILES

PUSH_ATTEMPTS = 5
_SERVER_IDENT = {"GIT_COMMITTER_NAME": "nexus-registry", "GIT_COMMITTER_EMAIL": "registry@nexus"}


@dataclass(frozen=True)
class Pushed:
    attempts: int  # 1 when the first push went through; each other one followed a merge


class Committer:
    """Commits and pushes in one working tree; callers serialise (one change at a time)."""

    def __init__(self, root: Path, *, remote: str = "origin", branch: str | None = None) -> None:
        self.root = root
        self.remote = remote
        self.branch = branch

    def commit(self, message: str, author: str) -> str | None:
        """Commit the registry's own files as `author` (`Name <email>`); the new commit's
        hash, or None when nothing changed."""
        paths = [name for name in sorted(OWN_FILES) if (self.root / name).exists()]
        self._git("add", "--", *paths)
        if self._git("diff", "--cached", "--quiet", "--", *paths, check=False).returncode == 0:
            return None
        self._git("commit", "-q", "--no-verify", f"--author={author}", "-m", message, "--", *paths)
        return self._git("rev-parse", "HEAD").stdout.strip()

    def discard(self) -> None:
        """Put the registry's files back as HEAD has them (a change that could not commit)."""
        paths = [name for name in sorted(OWN_FILES) if self._tracked(name)]
        if paths:
            self._git("checkout", "HEAD", "--", *paths, check=False)

    def push(self) -> Pushed:
        """Push HEAD to the remote branch; on a rejection fetch, merge and try again."""
        branch = self.branch or self._git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            pushed = self._git("push", "-q", self.remote, f"HEAD:{branch}", check=False)
            if pushed.returncode == 0:
                return Pushed(attempt)
            fetched = self._git("fetch", "-q", self.remote, branch, check=False)
            if fetched.returncode != 0:
                raise GitError(f"git push failed and so did git fetch: {_said(fetched)}.")
            merging = self._git("merge", "-q", "--no-edit", "FETCH_HEAD", check=False)
            if merging.returncode != 0:
                self._git("merge", "--abort", check=False)
                raise GitError(f"the remote's changes do not merge: {_said(merging)}.")
        raise GitError(f"git push to {self.remote} was rejected {PUSH_ATTEMPTS} times.")

    def _tracked(self, name: str) -> bool:
        return bool(self._git("ls-files", "--", name, check=False).stdout.strip())

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        if not self._configured("user.name"):
            env.update(_SERVER_IDENT)  # a server's clone may have no identity of its own
        done = subprocess.run(
            ["git", *args], cwd=self.root, env=env, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed: {_said(done)}.")
        return done

    def _configured(self, name: str) -> bool:
        done = subprocess.run(
            ["git", "config", "--get", name], cwd=self.root, capture_output=True, check=False
        )
        return done.returncode == 0


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return (
        (done.stderr or done.stdout).strip().splitlines()[-1]
        if (done.stderr or done.stdout).strip()
        else f"exit {done.returncode}"
    )
