"""The zero-config backend: a directory, by default `<repo>/.nexus/store`."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from control_plane.core.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from control_plane.core.hashing import CHUNK_SIZE, ProgressCallback
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key


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
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        except OSError as exc:
            raise StorageError(f"cannot write to the local store {self.root}: {exc}.") from exc
        tmp = Path(tmp_name)
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
            with path.open("rb") as src, dest.open("wb") as out:
                _copy(src.fileno(), out.fileno(), progress)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{path} is missing from the local store.") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}.") from exc

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            return ObjectInfo(key=key, size=path.stat().st_size)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{path} is missing from the local store.") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".") and key.startswith(prefix):
                yield ObjectInfo(key=key, size=path.stat().st_size)

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
