"""Lines the registry keeps in the repository's own dot files (`.gitignore`,
`.gitattributes`): appended once, never duplicated, the user's lines left alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def ensure_gitignored(gitignore: Path, pattern: str) -> bool:
    """Append `pattern` to a .gitignore unless an equivalent line is there."""
    bare = pattern.strip("/")
    return _append_unless(gitignore, pattern, lambda line: line.strip().strip("/") == bare)


def ensure_line(path: Path, line: str) -> bool:
    """Append `line` to a file such as .gitattributes unless it is there (spacing aside)."""
    words = line.split()
    return _append_unless(path, line, lambda existing: existing.split() == words)


def _append_unless(path: Path, line: str, present: Callable[[str], bool]) -> bool:
    """True if the line had to be appended."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    if any(present(existing) for existing in text.splitlines()):
        return False
    separator = "" if not text or text.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"{separator}{line}\n")
    return True
