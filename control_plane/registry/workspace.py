"""The repository a registry works in: its root, its `.nexus/` folder and its Git.

`.nexus/` holds what is derived or local (the lock, the listing index, the
default store) and never belongs in Git: it ignores itself (a `.gitignore` of
`*` inside it) and writes also add it to the repository's `.gitignore`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from control_plane.core.errors import GitError
from control_plane.metadata import METADATA_FILENAME
from control_plane.metadata.location import WORKDIR, find_root
from control_plane.registry.dotfiles import ensure_gitignored

if TYPE_CHECKING:
    from control_plane.registry.git import GitRepo


class Workspace:
    """Found from a start directory: the Git working tree above it, else the metadata's folder."""

    def __init__(self, start: Path | str | None = None) -> None:
        self.start = Path(start or Path.cwd()).resolve()
        self.root = find_root(self.start)
        self._git: GitRepo | None = None

    @property
    def metadata_path(self) -> Path:
        return self.root / METADATA_FILENAME

    @property
    def workdir(self) -> Path:
        return self.root / WORKDIR

    @property
    def lock_path(self) -> Path:
        return self.workdir / "meta.lock"

    @property
    def index_path(self) -> Path:
        return self.workdir / "list-index"

    def git(self) -> GitRepo:
        """Created on first use: serving and listing need only the metadata file."""
        if self._git is None:
            from control_plane.registry.git import GitRepo  # gitpython is slow to import

            self._git = GitRepo(self.start)
        return self._git

    def who(self) -> str | None:
        """Git's user for history events; None outside a repository."""
        try:
            return self.git().author()
        except GitError:
            return None

    def prepare(self) -> None:
        """Before a write: create `.nexus/`, keep it out of the repository's Git, and set up
        the merge driver (so branches that both write never conflict)."""
        self._make_workdir()
        if (self.root / ".git").exists():
            ensure_gitignored(self.root / ".gitignore", f"{WORKDIR}/")
            from control_plane.registry.conflicts import install_driver  # needs Git; writes only

            with contextlib.suppress(GitError):  # a read-only .git/config must not stop a write
                install_driver(self.root, self.git())

    def prepare_cache(self) -> bool:
        """Before a read that caches (the listing index): False where the checkout is read-only."""
        try:
            self._make_workdir()
        except OSError:
            return False
        return True

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary folder inside `.nexus/` (same filesystem as the store: cheap renames)."""
        self.prepare()
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            yield Path(tmp)

    def _make_workdir(self) -> None:
        if not self.workdir.is_dir():
            self.workdir.mkdir(exist_ok=True)
            (self.workdir / ".gitignore").write_text(
                "# written by nexus: all of .nexus/ is local\n*\n"
            )
