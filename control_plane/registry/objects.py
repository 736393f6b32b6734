"""Moving a version's bytes: upload once (never over other bytes), fetch and verify.

Fetch order: download beside DEST, verify size and sha256, rename into place,
so a failed or corrupt download never leaves a file at DEST.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

from control_plane.core.errors import (
    IntegrityError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    UsageError,
)
from control_plane.core.hashing import ProgressCallback, sha256_file
from control_plane.metadata import ModelEntry
from control_plane.registry import tree_transfer
from control_plane.registry.tree import LocalTree, Manifest, TreeFile
from control_plane.registry.workspace import Workspace
from control_plane.storage import StorageBackend
from nexus_common.files import temp_file_beside


class ProgressReporter(Protocol):
    """Something that shows a transfer: `start` returns the per-chunk callback."""

    def start(self, description: str, total: int) -> ProgressCallback: ...


def callback(
    progress: ProgressReporter | None, description: str, total: int
) -> ProgressCallback | None:
    return progress.start(description, total) if progress is not None else None


class Objects:
    """A version's bytes in the store, as the registry moves and checks them."""

    def __init__(self, backend: StorageBackend, workspace: Workspace) -> None:
        self.backend = backend
        self._workspace = workspace

    def upload_once(
        self, source: Path, key: str, sha256: str, size: int, progress: ProgressReporter | None
    ) -> bool:
        """Upload unless the same bytes are there already (False); never replace other bytes."""
        try:
            info = self.backend.stat(key)
        except ObjectNotFoundError:
            try:
                self.backend.upload(
                    source, key, sha256=sha256, progress=callback(progress, "uploading", size)
                )
            except ObjectExistsError:
                info = self.backend.stat(key)  # lost a race: judge what the winner wrote
            else:
                return True
        if info.size == size and (info.sha256 or self._stored_sha256(key)) == sha256:
            self.reuse(key)
            return False
        raise ObjectExistsError(
            f"{self.backend.uri(key)} already holds other bytes; it will not be overwritten.",
            hint="another store is writing this version now (retry once it is done), or wrote "
            "it and died before recording it (inspect or delete the object)",
        )

    def references(self, entry: ModelEntry) -> set[str]:
        """Every stored key the version needs: its file, or its manifest and files, and its
        signature and approval bundles."""
        keys = {entry.storage_uri, *bundle_keys(entry)}
        if entry.is_tree:
            keys.update(f.key for f in self.manifest(entry).files)
        return keys

    def manifest(self, entry: ModelEntry) -> Manifest:
        """A directory version's manifest, verified (and cached in `.nexus/`)."""
        return tree_transfer.read_manifest(self.backend, self._workspace, entry)

    def known_objects(self, entries: Sequence[ModelEntry]) -> dict[str, str]:
        """sha256 -> a key holding those bytes, from every version's file or manifest."""
        known: dict[str, str] = {}
        for entry in entries:
            if entry.is_tree:
                with contextlib.suppress(StorageError):  # a broken version just reuses nothing
                    known.update((f.sha256, f.key) for f in self.manifest(entry).files)
            elif entry.sha256:
                known.setdefault(entry.sha256, entry.storage_uri)
        return known

    def upload_tree(
        self,
        tree: LocalTree,
        hashed: list[TreeFile],
        manifest_key: str,
        files_prefix: str,
        entries: Sequence[ModelEntry],
    ) -> tree_transfer.TreeUpload:
        """Upload a directory's files (bytes any version already stored are reused), then
        its manifest."""
        done = tree_transfer.upload_tree(
            tree,
            hashed,
            files_prefix,
            self.known_objects(entries),
            lambda path, key, sha256, size: self.upload_once(path, key, sha256, size, None),
            self.reuse,
        )
        self.put_bytes(done.manifest.to_bytes(), manifest_key, done.manifest_sha256)
        return done

    def put_bytes(self, data: bytes, key: str, sha256: str | None = None) -> None:
        """Upload a small object (a manifest, a signature bundle) once, as `upload_once`."""
        with self._workspace.scratch() as tmp:
            (tmp / "object").write_bytes(data)
            digest = sha256 or hashlib.sha256(data).hexdigest()
            self.upload_once(tmp / "object", key, digest, len(data), None)

    def read_bytes(self, key: str, sha256: str | None) -> bytes:
        """A small object's bytes, checked against the sha256 recorded for it. Read through
        the system's temporary folder: a server's checkout may be read-only."""
        with tempfile.TemporaryDirectory(prefix="nexus-") as tmp:
            self.backend.download(key, Path(tmp) / "object")
            data = (Path(tmp) / "object").read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(
                f"{self.backend.uri(key)} is not the object recorded; it was changed in the store."
            )
        return data

    def verify_local(self, entry: ModelEntry, path: Path) -> None:
        """Raise IntegrityError unless the local copy (a file or a tree) matches the entry."""
        if entry.is_tree:
            tree_transfer.verify_tree(path, self.manifest(entry), entry.label)
        else:
            verify_file(path, entry)

    def reuse(self, key: str) -> bool:
        """Mark an existing object as used again (its store time renewed, so `nexus gc`'s
        grace period protects it while the new entry reaches Git); False if it is gone."""
        try:
            self.backend.touch(key)
        except ObjectNotFoundError:
            return False
        return True

    def load(
        self, entry: ModelEntry, dest: Path, *, progress: ProgressReporter | None = None
    ) -> Path:
        """Fetch to `dest` (a file, or a directory to keep the stored name).

        Missing parent folders are created, as `aws s3 cp` and `dvc get` do, and removed
        again if the fetch fails.
        """
        keep_name = dest.is_dir() and not entry.is_tree
        target = dest / PurePosixPath(entry.storage_uri).name if keep_name else dest
        created = _make_parents(target.parent)
        try:
            return self.fetch(entry, target, progress=progress)
        except BaseException:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    def fetch(
        self, entry: ModelEntry, dest: Path, *, progress: ProgressReporter | None = None
    ) -> Path:
        """Download beside `dest`, verify size and sha256, then rename into place.

        On any failure the temporary file is removed and `dest` is untouched. A directory
        version is restored as a whole tree the same way.
        """
        if entry.is_tree:
            return tree_transfer.fetch_tree(self.backend, self.manifest(entry), entry.label, dest)
        fd, tmp = temp_file_beside(dest, ".part")
        os.close(fd)
        try:
            self.backend.download(
                entry.storage_uri,
                tmp,
                progress=callback(progress, "downloading", entry.file_size or 0),
            )
            verify_file(tmp, entry, progress)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dest

    def verify(self, entries: Sequence[ModelEntry]) -> list[tuple[ModelEntry, StorageError | None]]:
        """Download and check each version: (entry, failure or None). Shared objects once."""
        checked: dict[tuple[str, str | None], StorageError | None] = {}
        results = []
        with self._workspace.scratch() as tmp:
            for entry in entries:
                key = (entry.storage_uri, entry.sha256)
                if key not in checked:
                    try:
                        copy = self.fetch(entry, tmp / "object")
                        checked[key] = None
                    except StorageError as exc:
                        checked[key] = exc
                    else:  # a tree is restored only into a new folder: clear it for the next
                        shutil.rmtree(copy) if copy.is_dir() else copy.unlink()
                results.append((entry, checked[key]))
        return results

    def _stored_sha256(self, key: str) -> str:
        """Hash an object the store holds without a recorded sha256 (rare: an orphan)."""
        with self._workspace.scratch() as tmp:
            path = tmp / "object"
            self.backend.download(key, path)
            return sha256_file(path)


def model_folder(prefix: str, model_name: str) -> str:
    """`<prefix>/<model>/`: where a model's objects live in the store."""
    return f"{prefix}/{model_name}/" if prefix else f"{model_name}/"


def bundle_keys(entry: ModelEntry) -> list[str]:
    """The store keys of the version's signature and approval bundles, as recorded."""
    bundles = (record.get("bundle") for record in (entry.signature, entry.approval) if record)
    return [key for key in bundles if isinstance(key, str)]


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    for path in missing:
        try:
            path.mkdir()
        except FileExistsError:
            continue  # created meanwhile by someone else
        except NotADirectoryError:
            raise UsageError(
                f"cannot create {folder}: {path.parent} is a file, not a directory.",
                hint="choose a destination inside a directory",
            ) from None
        except OSError as exc:
            raise UsageError(f"cannot create {path}: {exc.strerror}.") from None
    if not folder.is_dir():
        raise UsageError(
            f"{folder} is a file, not a directory.", hint="choose a destination inside a directory"
        )
    return missing


def verify_file(path: Path, entry: ModelEntry, progress: ProgressReporter | None = None) -> None:
    """Raise IntegrityError unless `path` has the entry's size and sha256."""
    size = path.stat().st_size
    if entry.file_size is not None and size != entry.file_size:
        raise IntegrityError(
            f"{entry.label}: the stored object has {size} bytes, the metadata says "
            f"{entry.file_size}; it was changed or truncated in the store.",
            hint="restore the object, or store the model again from its commit",
        )
    if entry.sha256 is not None:
        actual = sha256_file(path, callback(progress, "verifying", size))
        if actual != entry.sha256:
            raise IntegrityError(
                f"{entry.label}: the stored object's sha256 is {actual[:12]}…, the metadata "
                f"says {entry.sha256[:12]}…; it was changed in the store.",
                hint="restore the object, or store the model again from its commit",
            )
