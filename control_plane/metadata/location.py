"""Where a registry is: the repository root above a directory, and its local `.nexus/`.

Standard library only: the `nexus list` fast path finds its cache with it before
anything else is imported.
"""

from __future__ import annotations

from pathlib import Path

METADATA_FILENAME = ".nexus_meta.json"
WORKDIR = ".nexus"


def find_root(start: Path) -> Path:
    """The Git working tree above `start`, else the directory holding the metadata file."""
    for marker in (".git", METADATA_FILENAME):
        for directory in (start, *start.parents):
            if (directory / marker).exists():
                return directory
    return start
