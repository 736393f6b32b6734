"""`.nexus_meta.json` on disk: read freely, rewritten only under a lock, atomically.

A file that cannot be parsed is never overwritten: `update` parses it first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from control_plane.core.errors import MetadataError, MetadataFileError
from control_plane.metadata.document import MetadataDocument, parse_document
from nexus_common.files import atomic_write

__all__ = ["LOCK_TIMEOUT_S", "MetadataFile", "atomic_write"]

LOCK_TIMEOUT_S = 60.0


class MetadataFile:
    """`.nexus_meta.json` on disk, read freely and rewritten only under a lock."""

    def __init__(
        self,
        path: Path,
        lock_path: Path,
        on_write: Callable[[bytes, MetadataDocument], None] | None = None,
    ) -> None:
        self.path = path
        self._lock_path = lock_path
        self._on_write = on_write

    def parse(self, data: bytes) -> MetadataDocument:
        return parse_document(data, self.path)

    def read_bytes(self) -> bytes:
        """The file's bytes; empty when there is no file yet."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise MetadataFileError(
                f"cannot read {self.path}: {exc.strerror}.",
                hint="make it readable by this user (chmod a+r), or run as its owner",
            ) from exc

    def read(self) -> MetadataDocument:
        data = self.read_bytes()
        return parse_document(data, self.path) if data else MetadataDocument()

    @contextlib.contextmanager
    def update(self) -> Iterator[MetadataDocument]:
        """Lock, read, let the caller change the document, then write it atomically.

        If the caller raises, nothing is written.
        """
        with self._locked():
            document = self.read()
            yield document
            self._write(document)

    def replace(self, document: MetadataDocument) -> None:
        """Write a whole new document without reading the old (`nexus resolve`: the old one
        is a conflicted file that cannot be parsed)."""
        with self._locked():
            self._write(document)

    def _write(self, document: MetadataDocument) -> None:
        # Temp files exist only while a writer holds the lock, so any found now were left by
        # a writer killed mid-write (kill -9, power loss): never the file, only litter.
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        document.number_versions()
        data = document.to_bytes()
        atomic_write(self.path, data)
        if self._on_write is not None:
            self._on_write(data, document)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import FileLock, Timeout  # only writers need it

        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self._lock_path), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout as exc:
            raise MetadataError(
                f"another nexus process has held {self._lock_path} for {LOCK_TIMEOUT_S:.0f} s.",
                hint="wait for it to finish, or delete the lock file if no nexus is running",
            ) from exc
        try:
            yield
        finally:
            lock.release()
