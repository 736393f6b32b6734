"""The zero-config backend: a directory, by default `<repo>/.nexus/store`."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from control_plane.core.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from control_plane.core.hashing import CHUNK_SIZE, ProgressCallback
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key, writing_to
from nexus_common.files import temp_file_beside


class LocalBackend(StorageBackend):
    """Objects are files under `root`; a new object appears by hard link, never overwriting."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri() if self.root.is_absolute() else str(self.root / key)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def upload(
        self, source: Path, key: str, *, sha256: str, progress: ProgressCallback | None = None
    ) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file_beside(target)
        except OSError as exc:
            raise StorageError(f"cannot write to the local store {self.root}: {exc}.") from exc
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                # No fsync, as cp: the object is complete before it becomes visible, and a
                # load verifies size and sha256, so a torn write is caught, never served.
                _copy(src.fileno(), out.fileno(), progress)
            try:
                os.link(tmp, target)  # atomic and refuses to replace an existing file
            except FileExistsError as exc:
                raise ObjectExistsError(
                    f"{target} already exists; the local store never overwrites an object."
                ) from exc
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc.strerror or exc}.") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def download(self, key: str, dest: Path, *, progress: ProgressCallback | None = None) -> None:
        path = self._path(key)
        try:
            with writing_to(dest), path.open("rb") as src, dest.open("wb") as out:
                _copy(src.fileno(), out.fileno(), progress)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{path} is missing from the local store.") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}.") from exc

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            facts = path.stat()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{path} is missing from the local store.") from exc
        return ObjectInfo(key=key, size=facts.st_size, modified=facts.st_mtime)

    def touch(self, key: str) -> None:
        path = self._path(key)
        try:
            os.utime(path)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{path} is missing from the local store.") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walks only the folder the prefix names (a model's objects, not the whole store)."""
        folder, _, _ = prefix.rpartition("/")
        top = self.root / folder if folder else self.root
        if not top.is_dir():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if base == "." else f"{base}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    found.append(key)
        for key in sorted(found):
            with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                facts = (self.root / key).stat()
                yield ObjectInfo(key=key, size=facts.st_size, modified=facts.st_mtime)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


def _copy(src_fd: int, dst_fd: int, progress: ProgressCallback | None) -> None:
    """Kernel-side copy (sendfile) in chunks so progress can be reported."""
    try:
        while sent := os.sendfile(dst_fd, src_fd, None, CHUNK_SIZE * 4):
            if progress is not None:
                progress(sent)
    except OSError:
        # sendfile may be unsupported between these files; fall back to a buffered copy
        # from wherever it stopped.
        with open(src_fd, "rb", closefd=False) as src, open(dst_fd, "wb", closefd=False) as dst:
            shutil.copyfileobj(src, dst, CHUNK_SIZE)
