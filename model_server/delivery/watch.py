"""Noticing that the followed ref may have moved: the metadata file, and a Git remote.

Polling is cheap: a `stat` of `.nexus_meta.json` every interval, and its bytes
hashed only when the stat changed, so an unchanged workspace costs one syscall.
A server in a container follows the team's repository by fetching a branch into
its workspace on the same interval (`NEXUS_GIT_REMOTE`, `NEXUS_GIT_BRANCH`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 60.0


class FileWatcher:
    """Says whether a file's content changed since the last call (True on the first call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._digest: bytes | None = None
        self._seen = False

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stat, digest = None, None
        else:
            stat = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stat == self._stat and self._seen:
                return False
            digest = _digest(self.path)
        first, self._seen = not self._seen, True
        self._stat = stat
        if digest == self._digest and not first:
            return False
        self._digest = digest
        return True


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except FileNotFoundError:
        return None


class FollowError(Exception):
    """The remote could not be fetched; the workspace is left as it was."""


class GitFollower:
    """Keeps a workspace at the tip of one remote branch (the workspace is the server's own)."""

    def __init__(self, workspace: Path, remote: str, branch: str) -> None:
        self.workspace = workspace
        self.remote = remote
        self.branch = branch

    def pull(self) -> None:
        """Fetch the branch and move the workspace to it. Blocking: run it in a thread."""
        if not (self.workspace / ".git").exists():
            self.workspace.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q")
        self._git("fetch", "-q", "--depth", "1", self.remote, self.branch)
        self._git("reset", "-q", "--hard", "FETCH_HEAD")

    def _git(self, *args: str) -> None:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=self.workspace,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FollowError(f"git {args[0]} failed: {exc}") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            detail = lines[-1] if lines else f"exit code {done.returncode}"
            raise FollowError(f"git {args[0]} {self.remote} {self.branch} failed: {detail}")
