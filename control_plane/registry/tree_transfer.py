"""Moving a directory version: files in parallel, bytes never uploaded twice, restored whole.

A restore builds the tree in a temporary folder beside DEST, verifies every file's
size and sha256, and only then renames it into place, so DEST never holds half a
model. The manifest (immutable, named by its sha256) is cached in `.nexus/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from control_plane.core.errors import IntegrityError, UsageError
from control_plane.core.hashing import sha256_file
from control_plane.metadata import ModelEntry
from control_plane.registry.tree import LocalTree, Manifest, TreeFile, check_path
from control_plane.registry.workspace import Workspace
from control_plane.storage import StorageBackend
from nexus_common.files import temp_dir_beside

WORKERS = 8
UploadOnce = Callable[[Path, str, str, int], bool]


@dataclass(frozen=True)
class TreeUpload:
    manifest: Manifest
    uploaded_files: int
    uploaded_bytes: int
    reused_files: int
    reused_bytes: int

    @property
    def manifest_sha256(self) -> str:
        return _sha256_bytes(self.manifest.to_bytes())


def hash_tree(tree: LocalTree, on_bytes: Callable[[int], None] | None) -> list[TreeFile]:
    """Every file's sha256, hashed in parallel (hashlib releases the GIL)."""

    def one(item: tuple[str, Path, int]) -> TreeFile:
        relative, path, size = item
        digest = sha256_file(path)
        if on_bytes is not None:
            on_bytes(size)
        return TreeFile(relative, size, digest)

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(one, tree.files))


def upload_tree(
    tree: LocalTree,
    hashed: list[TreeFile],
    files_prefix: str,
    known: Mapping[str, str],
    upload_once: UploadOnce,
    reuse: Callable[[str], bool],
) -> TreeUpload:
    """Upload each file unless the store already has its bytes (under `known[sha256]`, any
    model's object, or at its own content key); returns the manifest and the counts."""
    sources = {relative: path for relative, path, _ in tree.files}
    lock = threading.Lock()
    counts = {"uploaded": 0, "uploaded_bytes": 0, "reused": 0, "reused_bytes": 0}

    def one(file: TreeFile) -> TreeFile:
        existing = known.get(file.sha256)
        if existing is not None and reuse(existing):
            key, uploaded = existing, False
        else:
            key = f"{files_prefix}{file.sha256}"
            uploaded = upload_once(sources[file.path], key, file.sha256, file.size)
        with lock:
            kind = "uploaded" if uploaded else "reused"
            counts[kind] += 1
            counts[f"{kind}_bytes"] += file.size
        return TreeFile(file.path, file.size, file.sha256, key)

    with ThreadPoolExecutor(WORKERS) as pool:
        files = tuple(pool.map(one, hashed))
    return TreeUpload(
        Manifest(files, tree.dirs),
        counts["uploaded"],
        counts["uploaded_bytes"],
        counts["reused"],
        counts["reused_bytes"],
    )


def read_manifest(backend: StorageBackend, workspace: Workspace, entry: ModelEntry) -> Manifest:
    """The version's manifest, verified against the entry's sha256; cached once verified."""
    if entry.sha256 is None:
        raise IntegrityError(f"{entry.label} is a directory without a manifest sha256.")
    cache = workspace.workdir / "manifests" / f"{entry.sha256}.json"
    if cache.is_file():
        data = cache.read_bytes()
        if _sha256_bytes(data) == entry.sha256:
            return Manifest.parse(data, entry.label)
    with workspace.scratch() as tmp:
        backend.download(entry.storage_uri, tmp / "manifest")
        data = (tmp / "manifest").read_bytes()
    if _sha256_bytes(data) != entry.sha256:
        raise IntegrityError(
            f"{entry.label}: the stored manifest's sha256 does not match the metadata; it was "
            "changed in the store.",
            hint="restore the object, or store the model again from its commit",
        )
    manifest = Manifest.parse(data, entry.label)
    cache.parent.mkdir(exist_ok=True)
    tmp_cache = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp_cache.write_bytes(data)
    os.replace(tmp_cache, cache)
    return manifest


def fetch_tree(backend: StorageBackend, manifest: Manifest, label: str, dest: Path) -> Path:
    """Restore the tree at `dest` (absent or an empty folder), verified, or nothing at all."""
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise UsageError(
            f"{dest} already exists; a directory model is restored only into a new or empty "
            "folder, never over files.",
            hint="choose a new path, or remove it first",
        )
    tmp = temp_dir_beside(dest)
    try:
        root = tmp.resolve()
        for folder in manifest.dirs:
            _inside(root, folder, label).mkdir(parents=True, exist_ok=True)

        def one(file: TreeFile) -> None:
            target = _inside(root, file.path, label)
            target.parent.mkdir(parents=True, exist_ok=True)
            backend.download(file.key, target)
            check_file(target, file, label)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, manifest.files))
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def verify_tree(root: Path, manifest: Manifest, label: str) -> None:
    """Raise IntegrityError unless every file under `root` matches the manifest."""

    def one(file: TreeFile) -> None:
        path = _inside(root.resolve(), file.path, label)
        if not path.is_file():
            raise IntegrityError(f"{label}: {file.path} is missing.")
        check_file(path, file, label)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, manifest.files))


def check_file(path: Path, file: TreeFile, label: str) -> None:
    size = path.stat().st_size
    if size != file.size or sha256_file(path) != file.sha256:
        raise IntegrityError(
            f"{label}: {file.path} does not match its manifest (size or sha256); the stored "
            "object was changed or truncated.",
            hint="restore the object, or store the model again from its commit",
        )


def _inside(root: Path, relative: str, label: str) -> Path:
    """The path under `root`, refused if it (or a link on the way) leads outside."""
    check_path(relative, label)
    target = root / relative
    if not target.parent.resolve().is_relative_to(root) or target.is_symlink():
        raise IntegrityError(f"{label}: refusing '{relative}': it leads outside the directory.")
    return target


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
