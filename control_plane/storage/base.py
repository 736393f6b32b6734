"""The storage interface every backend implements.

A backend addresses objects by key (`<prefix>/<model>/<commit>.<ext>`) inside
its bucket or directory. Five methods are required; conveniences such as
`exists` are built once here. A backend missing a method cannot be created.
"""

from __future__ import annotations

import contextlib
import errno
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from control_plane.core.errors import ObjectNotFoundError, StorageError, UsageError
from control_plane.core.hashing import ProgressCallback

_KEY = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._/-]{1,1024}$")


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object without reading it. `modified` is the store's
    own time for it (Unix seconds): when it was written, or last touched by a reuse."""

    key: str
    size: int
    sha256: str | None = None
    modified: float | None = None


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (absolute, `..`, odd characters)."""
    if not _KEY.match(key) or "//" in key:
        raise UsageError(f"'{key}' is not a valid storage key.")
    return key


_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def writing_to(dest: Path) -> Iterator[None]:
    """A download that fills the local disk is said as such, not as a failure of the store
    (the object is fine; the caller's disk is full, or over its quota or file-size limit)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        raise StorageError(
            f"cannot write to {dest.parent}: {exc.strerror}.",
            hint="free space there (or raise its quota), or load somewhere else",
        ) from exc


class StorageBackend(ABC):
    """Upload, download, stat, list and delete objects by key."""

    @abstractmethod
    def upload(
        self, source: Path, key: str, *, sha256: str, progress: ProgressCallback | None = None
    ) -> None:
        """Copy `source` to `key`. The object is visible only once complete.

        Raises ObjectExistsError rather than replace an existing object.
        """

    @abstractmethod
    def download(self, key: str, dest: Path, *, progress: ProgressCallback | None = None) -> None:
        """Write the object's bytes to `dest` (a temporary file the caller verifies)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size (and sha256 where the store keeps it); ObjectNotFoundError if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; absent objects are not an error."""

    @abstractmethod
    def touch(self, key: str) -> None:
        """Renew the object's `modified` time without changing its bytes: a store that reuses
        an object marks it young, so garbage collection's grace period covers it again."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where an object lives, for messages: a file URL or s3:// / gs:// URL."""
