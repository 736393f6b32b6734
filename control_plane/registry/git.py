"""The Git facts a store needs: the repository root, HEAD, cleanliness, authorship."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import git

from control_plane.core.errors import GitError

# Files NexusML itself writes; their changes do not make a tree dirty.
OWN_FILES = frozenset({".nexus_meta.json", ".gitignore", ".gitattributes"})


def own_files_to_commit(root: Path) -> list[str]:
    """The registry's own files (OWN_FILES) that Git has not committed as they are: changed,
    staged or new. Plain `git status`, so a command's closing hint costs no gitpython import."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "-z", "--", *sorted(OWN_FILES)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return []
    return sorted({record[3:] for record in done.stdout.split("\0") if len(record) > 3})


@dataclass(frozen=True)
class GitState:
    """What `store` records about the code a model was trained from."""

    commit_hash: str
    dirty: bool
    author: str | None


class GitRepo:
    """A thin, typed view of a repository, found from a directory upwards."""

    def __init__(self, start: Path | None = None) -> None:
        start = (start or Path.cwd()).resolve()
        try:
            self._repo = git.Repo(start, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitError(
                f"{start} is not inside a Git repository.",
                hint="run 'git init' and commit your code first; models are linked to commits",
            ) from exc
        if self._repo.working_tree_dir is None:
            raise GitError(f"{start} is a bare Git repository; run nexus in a working tree.")
        self.root = Path(self._repo.working_tree_dir)

    def head_commit(self) -> str:
        """HEAD's full 40-character hash."""
        try:
            return str(self._repo.head.commit.hexsha)
        except ValueError as exc:
            raise GitError(
                f"the repository at {self.root} has no commits yet.",
                hint="commit your training code first: git add -A && git commit -m 'initial'",
            ) from exc

    def dirty_paths(self) -> list[str]:
        """Tracked files with uncommitted changes (staged or not); untracked files don't count."""
        out = self._run("status", "--porcelain", "--untracked-files=no", "-z")
        paths = []
        for record in out.split("\0"):
            if len(record) > 3:
                path = record[3:]
                if path not in OWN_FILES:
                    paths.append(path)
        return paths

    def is_tracked(self, path: Path) -> bool:
        """True when Git tracks `path` (a binary that belongs in the store instead)."""
        try:
            relative = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            return False
        return bool(self._run("ls-files", "--", str(relative)).strip())

    def author(self) -> str | None:
        """`user.name <user.email>` from Git's config, if set."""
        reader = self._repo.config_reader()
        name = reader.get_value("user", "name", default="")
        email = reader.get_value("user", "email", default="")
        if not name and not email:
            return None
        return f"{name} <{email}>".strip() if email else str(name)

    def state(self, *, allow_dirty: bool) -> GitState:
        """HEAD and authorship, refusing a dirty tree unless allowed."""
        commit = self.head_commit()
        dirty = self.dirty_paths()
        if dirty and not allow_dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            raise GitError(
                f"the working tree has uncommitted changes to tracked files: {shown}.",
                hint="commit them so the model links to the code that made it, "
                "or pass --allow-dirty (recorded in the entry)",
            )
        return GitState(commit_hash=commit, dirty=bool(dirty), author=self.author())

    def config_get(self, name: str) -> str | None:
        result = self.run_bytes("config", "--local", "--get", name, check=False)
        return result.decode().strip() or None

    def config_set(self, name: str, value: str) -> None:
        self.run_bytes("config", "--local", name, value)

    def run_bytes(self, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
        """Raw git, for bytes and batch commands (`cat-file --batch`) gitpython would decode."""
        try:
            done = subprocess.run(
                ["git", *args], cwd=self.root, input=stdin, capture_output=True, check=False
            )
        except OSError as exc:
            raise GitError(f"cannot run git: {exc.strerror}.") from exc
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed: {done.stderr.decode().strip()}.")
        return done.stdout if done.returncode == 0 else b""

    def _run(self, *args: str) -> str:
        try:
            return str(self._repo.git.execute(["git", *args], strip_newline_in_stdout=False))
        except git.GitCommandError as exc:
            raise GitError(f"git {args[0]} failed: {exc.stderr.strip() or exc}.") from exc
