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

from model_server.errors import FollowError

GIT_TIMEOUT_S = 60.0


class FileWatcher:
    """Says whether a file's content changed since the last call (True on the first call).

    A file that cannot be read (its mode, its folder's) counts as a content of its own,
    and is read again at every call until it can be: fixing a mode changes only the
    inode's ctime, which a stat-only check would miss. `unreadable` says why, or is None.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stat: tuple[int, int, int, int] | None = None
        self._digest: bytes | str | None = None
        self._seen = False
        self.unreadable: str | None = None

    def changed(self) -> bool:
        digest: bytes | str | None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stat, digest = None, None
        except OSError as exc:
            stat, digest = None, f"cannot stat {self.path}: {exc.strerror}"
        else:
            stat = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
            if stat == self._stat and self._seen and self.unreadable is None:
                return False
            digest = _digest(self.path)
        first, self._seen = not self._seen, True
        self._stat = stat
        self.unreadable = digest if isinstance(digest, str) else None
        if digest == self._digest and not first:
            return False
        self._digest = digest
        return True


def _digest(path: Path) -> bytes | str | None:
    """The content's sha256; None when there is no file; why, when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"


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
