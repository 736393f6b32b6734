"""Files and folders written beside their destination, then renamed into place.

`tempfile.mkstemp` and `mkdtemp` make their results private (0600, 0700), and a rename
keeps the mode: a metadata file, a list index or a store object written that way could
not be read by a model server running as another user (a container's uid, a CI user).
What the registry writes for others to read is therefore created here with the mode
`open()` and `mkdir()` give, 0666 and 0777 less the process's umask; secrets (signing
keys, token files) are written with their own explicit modes elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_TRIES = 100


def _beside(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"


def temp_file_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty file next to `path` (same file system, so a rename is atomic), opened
    for writing: its descriptor and path. The name starts with `.{path.name}.`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(_TRIES):
        candidate = _beside(path, suffix)
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def temp_dir_beside(path: Path, suffix: str = ".part") -> Path:
    """A new, empty folder next to `path`, to be filled and then renamed to it."""
    for _ in range(_TRIES):
        candidate = _beside(path, suffix)
        try:
            candidate.mkdir(0o777)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write via a temp file in the same directory, then rename: readers see the old bytes
    or the new, never a part. `durable` fsyncs the file and the directory too."""
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
