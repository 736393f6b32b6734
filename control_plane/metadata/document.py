"""`.nexus_meta.json`'s content: the seed's format plus optional fields, parsed and validated.

A file written by the seed's tool (six fields, short hashes, naive timestamps)
loads unchanged. Unknown fields, top-level or per entry, survive a rewrite.
A file that cannot be parsed is reported with its line and column.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson

from control_plane.core.errors import MetadataError
from control_plane.metadata.entry import REQUIRED_FIELDS, ModelEntry

METADATA_FILENAME = ".nexus_meta.json"
SCHEMA_VERSION = 1


def _wrap_all(models: list[Any]) -> list[ModelEntry]:
    """Validate and wrap every entry; the checks are inlined because 100,000 calls add up."""
    entries: list[ModelEntry] = []
    append = entries.append
    new = ModelEntry.__new__
    for index, raw in enumerate(models):
        if type(raw) is dict:
            get = raw.get
            commit, name, uri, size = (
                get("commit_hash"),
                get("model_name"),
                get("storage_uri"),
                get("file_size"),
            )
            if (
                type(commit) is str
                and type(name) is str
                and type(uri) is str
                and commit
                and name
                and uri
                and (size is None or (type(size) is int and size >= 0))
            ):
                entry = new(ModelEntry)
                entry.data = raw
                append(entry)
                continue
        _explain_bad_entry(raw, index)
    return entries


def _explain_bad_entry(raw: Any, index: int) -> NoReturn:
    """Raise the precise error for an entry that failed the inlined checks."""
    if type(raw) is not dict:
        raise MetadataError(f"entry {index} in {METADATA_FILENAME} is not a JSON object.")
    for key in REQUIRED_FIELDS:
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise MetadataError(
                f"entry {index} in {METADATA_FILENAME} has no valid '{key}' (a string).",
                hint=f"fix or remove that entry by hand; {METADATA_FILENAME} is in Git",
            )
    raise MetadataError(
        f"entry {index} in {METADATA_FILENAME} has a 'file_size' that is not a "
        f"whole number of bytes: {raw.get('file_size')!r}."
    )


@dataclass
class MetadataDocument:
    """The whole file: its entries in file order plus any unknown top-level fields."""

    entries: list[ModelEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def versions(self, model_name: str) -> list[ModelEntry]:
        """The model's versions in file order (oldest stored first); empty if none."""
        return [e for e in self.entries if e.model_name == model_name]

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        body.update(self.extra)
        body["models"] = [entry.to_dict() for entry in self.entries]
        return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


def parse_document(data: bytes, source: Path) -> MetadataDocument:
    """Parse the file's bytes, naming line and column on a syntax error."""
    try:
        with _gc_paused():
            raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MetadataError(
            f"{source} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.",
            hint="fix it by hand (it is in Git: 'git diff' shows what changed); "
            "nexus will not overwrite it",
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models", []), list):
        raise MetadataError(
            f"{source} must be a JSON object with a 'models' list.",
            hint="nexus will not overwrite it; fix it by hand",
        )
    models = raw.get("models", [])
    extra = {k: v for k, v in raw.items() if k not in ("models", "schema_version")}
    version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise MetadataError(
            f"{source} has schema_version {version}; this nexus understands up to "
            f"{SCHEMA_VERSION}.",
            hint="upgrade nexusml",
        )
    with _gc_paused():
        entries = _wrap_all(models)
    return MetadataDocument(entries=entries, extra=extra)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building 100,000s of acyclic dicts triggers needless cyclic-GC passes (~2x slower)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
