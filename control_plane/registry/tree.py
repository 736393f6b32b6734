"""Directory models: a manifest of relative paths, sizes and sha256s, and its safety rules.

A directory version is stored as its files (each under its content's sha256, so
bytes any earlier version already stored are never uploaded again) plus a
manifest object; the entry points at the manifest and records its sha256, so
verifying the manifest verifies the whole tree. Paths are checked on store and
again on load: a manifest is data from the store, and a path that leaves the
tree (`..`, absolute, a symlink pointing out) is refused, never followed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import orjson

from control_plane.core.errors import IntegrityError, UsageError

MANIFEST_FORMAT = "nexus-directory/1"
MANIFEST_SUFFIX = ".tree.json"


@dataclass(frozen=True)
class TreeFile:
    """One file of a directory version: where it goes, what it is, where its bytes live."""

    path: str
    size: int
    sha256: str
    key: str = ""


@dataclass(frozen=True)
class Manifest:
    files: tuple[TreeFile, ...]
    dirs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_bytes(self) -> bytes:
        """Canonical (sorted, compact), so one tree always has one manifest sha256."""
        body = {
            "format": MANIFEST_FORMAT,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "key": f.key}
                for f in sorted(self.files, key=lambda f: f.path)
            ],
            "dirs": sorted(self.dirs),
        }
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def parse(cls, data: bytes, label: str) -> Manifest:
        """Parse and check a manifest from the store; any unsafe path refuses the whole."""
        try:
            body = orjson.loads(data)
            files = tuple(
                TreeFile(str(f["path"]), int(f["size"]), str(f["sha256"]), str(f["key"]))
                for f in body["files"]
            )
            dirs = tuple(str(d) for d in body.get("dirs", ()))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{label}: the directory manifest is malformed ({exc}).") from exc
        manifest = cls(files, dirs)
        check_layout(manifest, label)
        return manifest


def content_id(files: Iterable[TreeFile], dirs: Iterable[str]) -> str:
    """A tree's content, whatever keys its bytes sit under: two stores of the same tree
    compare equal even when one reused another model's objects."""
    body = sorted((f.path, f.size, f.sha256) for f in files), sorted(dirs)
    return hashlib.sha256(orjson.dumps(body)).hexdigest()


def check_path(path: str, label: str) -> str:
    """A relative POSIX path that stays inside the tree, or IntegrityError/UsageError."""
    parts = PurePosixPath(path).parts
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
        or not parts
    ):
        raise IntegrityError(
            f"{label}: refusing the path '{path}': it leaves the directory "
            "(absolute, '..', or empty parts).",
            hint="the manifest was tampered with or written by another tool; nothing was written",
        )
    return path


def check_layout(manifest: Manifest, label: str) -> None:
    """Safe paths, none twice, no file where another needs a folder."""
    seen: set[str] = set()
    for path in [*(f.path for f in manifest.files), *manifest.dirs]:
        check_path(path, label)
        if path in seen:
            raise IntegrityError(f"{label}: the manifest lists '{path}' twice.")
        seen.add(path)
    files = {f.path for f in manifest.files}
    for path in seen:
        for parent in PurePosixPath(path).parents:
            if str(parent) in files:
                raise IntegrityError(f"{label}: '{parent}' is both a file and a folder.")


@dataclass(frozen=True)
class LocalTree:
    """A directory to store: its files (relative path, absolute path, size) and empty dirs."""

    root: Path
    files: tuple[tuple[str, Path, int], ...]
    dirs: tuple[str, ...]


def scan_tree(root: Path) -> LocalTree:
    """Walk a directory to store; symlinks are followed only while they stay inside it."""
    root = root.resolve()
    files: list[tuple[str, Path, int]] = []
    empty: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in list(dirnames):
            if (here / name).is_symlink():
                raise UsageError(
                    f"{here / name} is a symlink to a folder; nexus stores regular files.",
                    hint="replace it with a copy, or store the folder it points to",
                )
        if not dirnames and not filenames and here != root:
            empty.append(here.relative_to(root).as_posix())
        for name in filenames:
            path = here / name
            relative = path.relative_to(root).as_posix()
            target = path.resolve()
            if not target.is_relative_to(root):
                raise UsageError(
                    f"{path} is a symlink leaving the directory (to {target}).",
                    hint="copy the file into the directory, or remove the link",
                )
            info = target.stat()
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(f"{path} is not a regular file; nexus stores files only.")
            files.append((check_path(relative, str(root)), target, info.st_size))
    if not files and not empty:
        raise UsageError(f"{root} is empty; there is nothing to store.")
    files.sort()
    return LocalTree(root, tuple(files), tuple(sorted(empty)))
