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

from control_plane.core.errors import MetadataFileError
from control_plane.metadata.entry import REQUIRED_FIELDS, STAGES, ModelEntry
from control_plane.metadata.location import METADATA_FILENAME

SCHEMA_VERSION = 1


def _wrap_all(models: list[Any]) -> list[ModelEntry]:
    """Validate and wrap every entry; the checks are inlined because 100,000 calls add up."""
    entries: list[ModelEntry] = []
    append = entries.append
    wrap = ModelEntry.wrap
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
                append(wrap(raw))
                continue
        _explain_bad_entry(raw, index)
    return entries


def _explain_bad_entry(raw: Any, index: int) -> NoReturn:
    """Raise the precise error for an entry that failed the inlined checks."""
    if type(raw) is not dict:
        raise MetadataFileError(f"entry {index} in {METADATA_FILENAME} is not a JSON object.")
    for key in REQUIRED_FIELDS:
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise MetadataFileError(
                f"entry {index} in {METADATA_FILENAME} has no valid '{key}' (a string).",
                hint=f"fix or remove that entry by hand; {METADATA_FILENAME} is in Git",
            )
    raise MetadataFileError(
        f"entry {index} in {METADATA_FILENAME} has a 'file_size' that is not a "
        f"whole number of bytes: {raw.get('file_size')!r}."
    )


@dataclass
class MetadataDocument:
    """The whole file: its entries in file order, the deleted versions (tombstones, each with
    its history), and any unknown top-level fields.

    Deleted versions live in a top-level `deleted` list, which readers of the seed's
    format ignore; keeping them whole keeps their history and reserves their numbers.
    """

    entries: list[ModelEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    deleted: list[ModelEntry] = field(default_factory=list)

    def versions(self, model_name: str) -> list[ModelEntry]:
        """The model's versions in file order (oldest stored first); empty if none."""
        return [e for e in self.entries if e.model_name == model_name]

    def next_version(self, model_name: str) -> int:
        """One more than any number the model has used, deleted versions included."""
        used = (
            e.data.get("version")
            for e in (*self.entries, *self.deleted)
            if e.model_name == model_name
        )
        return 1 + max((n for n in used if type(n) is int), default=0)

    def number_versions(self) -> None:
        """Give unnumbered entries (written before numbers existed) the next numbers, in
        file order; a no-op once every entry has one. One pass: a legacy file may hold
        100,000 unnumbered versions."""
        if all(type(e.data.get("version")) is int for e in self.entries):
            return
        highest: dict[str, int] = {}
        for entry in (*self.entries, *self.deleted):
            number = entry.data.get("version")
            if type(number) is int:
                highest[entry.model_name] = max(highest.get(entry.model_name, 0), number)
        for entry in self.entries:
            if type(entry.data.get("version")) is not int:
                highest[entry.model_name] = highest.get(entry.model_name, 0) + 1
                entry.version = highest[entry.model_name]

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        body.update(self.extra)
        body["models"] = [entry.to_dict() for entry in self.entries]
        if self.deleted:
            body["deleted"] = [entry.to_dict() for entry in self.deleted]
        return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


def parse_document(data: bytes, source: Path) -> MetadataDocument:
    """Parse the file's bytes, naming line and column on a syntax error, and the way out
    when the error is a merge conflict or a hand merge that broke the registry's rules."""
    document = parse_raw(data, source)
    problem = consistency_problem(document)
    if problem is not None:
        raise MetadataFileError(
            f"{source} breaks the registry's rules: {problem} (a merge done by hand or by a "
            "tool without nexus's merge driver?).",
            hint="run 'nexus resolve' to repair it by the merge rules; nothing is lost",
        )
    return document


def parse_raw(data: bytes, source: Path) -> MetadataDocument:
    """Parse without the consistency check: what `nexus resolve` repairs from."""
    try:
        with _gc_paused():
            raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        conflicts = count_conflicts(data)
        if conflicts:
            first = data[: data.find(CONFLICT_START)].count(b"\n") + 1
            raise MetadataFileError(
                f"{source} has {conflicts} unresolved merge conflict"
                f"{'s' if conflicts > 1 else ''} (the first at line {first}).",
                hint="run 'nexus resolve' to merge both sides by nexus's rules (nothing is "
                "lost); 'nexus init' sets up the merge driver that avoids this",
            ) from exc
        raise MetadataFileError(
            f"{source} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.",
            hint="fix it by hand (it is in Git: 'git diff' shows what changed); "
            "nexus will not overwrite it",
        ) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models", []), list):
        raise MetadataFileError(
            f"{source} must be a JSON object with a 'models' list.",
            hint="nexus will not overwrite it; fix it by hand",
        )
    models = raw.get("models", [])
    deleted = raw.get("deleted", [])
    if not isinstance(deleted, list):
        raise MetadataFileError(f"{source} has a 'deleted' field that is not a list.")
    extra = {k: v for k, v in raw.items() if k not in ("models", "schema_version", "deleted")}
    version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise MetadataFileError(
            f"{source} has schema_version {version}; this nexus understands up to "
            f"{SCHEMA_VERSION}.",
            hint="upgrade nexusml",
        )
    with _gc_paused():
        entries = _wrap_all(models)
        tombstones = _wrap_all(deleted)
    return MetadataDocument(entries=entries, extra=extra, deleted=tombstones)


CONFLICT_START = b"<<<<<<< "


def count_conflicts(data: bytes) -> int:
    """How many conflict blocks a text merge left (lines starting `<<<<<<< `)."""
    return sum(1 for line in data.split(b"\n") if line.startswith(CONFLICT_START))


def consistency_problem(document: MetadataDocument) -> str | None:
    """What a valid file never has: a version twice, two latest versions of a model, two
    holders of a stage, a version number or alias used twice. None when consistent."""
    seen: set[tuple[str, str]] = set()
    claims: set[tuple[str, str, Any]] = set()
    for entry in document.entries:
        get = entry.data.get
        name = entry.model_name
        key = (name, entry.commit_hash)
        if key in seen:
            return f"{name}@{entry.commit_hash[:7]} is listed twice"
        seen.add(key)
        owned: list[tuple[str, Any]] = []
        if get("is_latest"):
            owned.append(("latest", True))
        stage = get("stage")
        if stage in STAGES:
            owned.append(("stage", stage))
        version = get("version")
        if version is not None:
            owned.append(("version", version))
        owned.extend(("alias", alias) for alias in get("aliases") or ())
        for kind, value in owned:
            claim = (name, kind, value)
            if claim in claims:
                what = {"latest": "two latest versions", "stage": f"two versions in {value}"}
                return f"model '{name}' has " + what.get(
                    kind, f"two versions with {kind} {value!r}"
                )
            claims.add(claim)
    return None


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
