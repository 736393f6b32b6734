"""Files and folders written beside their destination, then renamed into place; private files.

`tempfile.mkstemp` and `mkdtemp` make their results private (0600, 0700), and a rename
keeps the mode: a metadata file, a list index or a store object written that way could
not be read by a model server running as another user (a container's uid, a CI user).
What the registry writes for others to read is therefore created here with the mode
`open()` and `mkdir()` give, 0666 and 0777 less the process's umask; secrets (signing
keys, token files) are written with their own explicit modes elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from nexus_common.errors import FileFormatError

_TRIES = 100


def _beside(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"


def temp_file_beside(path: Path, suffix: str = ".tmp", mode: int = 0o666) -> tuple[int, Path]:
    """A new, empty file next to `path` (same file system, so a rename is atomic), opened
    for writing: its descriptor and path. The name starts with `.{path.name}.`; its mode
    is `mode` less the umask (0o600: its owner's only, from its first byte)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(_TRIES):
        candidate = _beside(path, suffix)
        try:
            return os.open(candidate, flags, mode), candidate
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


def atomic_write(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o666) -> None:
    """Write via a temp file in the same directory, then rename: readers see the old bytes
    or the new, never a part. `durable` fsyncs the file and the directory too; `mode` as
    in `temp_file_beside`."""
    fd, tmp = temp_file_beside(path, mode=mode)
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


def read_private_text(path: Path, error: type[FileFormatError]) -> str:
    """A key or token file's text ('' when there is none yet); `error` when unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}.") from exc


def write_private_json(path: Path, body: Any) -> None:
    """Atomically, readable by its owner only (key and token files: digests, but still)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(body, indent=2) + "\n"
    atomic_write(path, text.encode(), durable=False, mode=0o600)
