"""A derived, column-wise index that makes listing a large `.nexus_meta.json` fast.

Parsing 100,000 entries costs most of a second in object creation alone, while
`nexus list` needs a dozen short strings per version. After a full parse (which
also validates the file) those are kept column by column in `.nexus/list-index`
(git-ignored), keyed by the file's length and CRC-32, and loaded with `marshal`
(~10x faster). The key is the content, so no edit can be missed; a missing,
stale or unreadable index just means one full parse.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from control_plane.core.units import human_size
from control_plane.metadata.document import MetadataDocument
from control_plane.metadata.entry import ModelEntry, VersionFacts
from control_plane.metadata.file import MetadataFile

INDEX_FORMAT = 2


class _Row(NamedTuple):
    model_name: str
    version_text: str
    short_hash: str
    size_text: str
    stored_text: str
    latest_mark: str
    stage: str
    status: str
    format: str
    commit_hash: str
    timestamp: str | None
    owner: str | None
    base_model: str | None
    metrics_json: bytes | None
    tags_json: bytes | None


DISPLAY_FIELDS = 9


class Summary(_Row, VersionFacts):
    """One version as `nexus list` shows and filters it; the first DISPLAY_FIELDS are the row."""

    __slots__ = ()

    @property
    def is_latest(self) -> bool:
        return self.latest_mark == "*"

    @property
    def metrics(self) -> dict[str, float] | None:
        return orjson.loads(self.metrics_json) if self.metrics_json else None

    @property
    def tags(self) -> dict[str, str] | None:
        return orjson.loads(self.tags_json) if self.tags_json else None

    @classmethod
    def of(cls, entry: ModelEntry) -> Summary:
        get = entry.data.get
        stamp = get("timestamp")
        metrics, tags = get("metrics"), get("tags")
        version, aliases = get("version"), get("aliases")
        return cls(
            entry.model_name,
            (f"v{version}" if version is not None else "")
            + (f" ({', '.join(aliases)})" if aliases else ""),
            entry.commit_hash[:7],
            human_size(get("file_size")),
            str(stamp or "?").replace("T", " ")[:19],
            "*" if get("is_latest") else "",
            str(get("stage") or ""),
            str(get("status") or ""),
            str(get("format") or ""),
            entry.commit_hash,
            stamp if isinstance(stamp, str) else None,
            get("owner"),
            get("base_model"),
            orjson.dumps(metrics) if metrics else None,
            orjson.dumps(tags) if tags else None,
        )


def summaries(metadata: MetadataFile, index_path: Path | None, data: bytes) -> list[Summary]:
    """Every version's summary of the file's `data`, from the index when it matches, else
    parsed."""
    if not data:
        return []
    key = content_key(data)
    if index_path is not None:
        columns = _load(index_path, key)
        if columns is not None:
            return list(map(Summary._make, zip(*columns, strict=True)))
    document = metadata.parse(data)
    rows = [Summary.of(entry) for entry in document.entries]
    if index_path is not None:
        _save(index_path, key, rows)
    return rows


def refresh(index_path: Path, data: bytes, document: MetadataDocument) -> None:
    """Rebuild the index right after a write, from the document already in memory."""
    _save(index_path, content_key(data), [Summary.of(entry) for entry in document.entries])


def content_key(data: bytes) -> tuple[Any, ...]:
    """What a derived file is valid for: this format, this Python, these exact bytes."""
    return (INDEX_FORMAT, sys.version_info[:2], len(data), zlib.crc32(data))


def _load(path: Path, key: tuple[Any, ...]) -> Sequence[Sequence[Any]] | None:
    try:
        stored_key, columns = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if stored_key != key or not isinstance(columns, list) or len(columns) != len(Summary._fields):
        return None
    return columns


def _save(path: Path, key: tuple[Any, ...], rows: list[Summary]) -> None:
    """Best effort, only where `.nexus/` exists: a read-only checkout lists without one."""
    if not path.parent.is_dir():
        return
    columns = (
        [list(column) for column in zip(*rows, strict=True)]
        if rows
        else [[] for _ in Summary._fields]
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(marshal.dumps((key, columns)))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
