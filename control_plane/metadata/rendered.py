"""The text of a plain `nexus list`, cached beside the listing index.

Most of a repeated `nexus list` over 100,000 versions is spent importing the CLI
and formatting rows that have not changed. So the plain table (every version,
newest first: what `nexus list` prints when its output is not a small terminal
table) is kept in `.nexus/list-rendered`, keyed like the index by the metadata
file's exact bytes; the console script replays it before importing anything else.
A stale, missing or unreadable cache just means the normal path (which rewrites it).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from pathlib import Path

from control_plane.metadata.listing import content_key
from control_plane.metadata.location import METADATA_FILENAME, WORKDIR, find_root

CACHE_NAME = "list-rendered"
RICH_TABLE_MAX_ROWS = 2000  # up to this many rows, a terminal gets a rich table instead


def save(root: Path, metadata: bytes, text: bytes, rows: int) -> None:
    """Best effort, only where `.nexus/` exists (as for the index)."""
    path = root / WORKDIR / CACHE_NAME
    if not path.parent.is_dir():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(marshal.dumps((content_key(metadata), rows, text)))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def replay(start: Path | None = None) -> bool:
    """Print the cached table if it is valid for the metadata file as it is now."""
    root = find_root((start or Path.cwd()).resolve())
    try:
        key, rows, text = marshal.loads((root / WORKDIR / CACHE_NAME).read_bytes())
        metadata = (root / METADATA_FILENAME).read_bytes()
    except (OSError, EOFError, ValueError, TypeError):
        return False
    if key != content_key(metadata) or (rows <= RICH_TABLE_MAX_ROWS and sys.stdout.isatty()):
        return False
    sys.stdout.buffer.write(text)
    sys.stdout.flush()
    return True
