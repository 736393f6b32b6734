"""`.nexus_meta.json`: the seed's format, optional fields, atomic locked rewrites.

A file written by the seed's tool (six fields, short hashes, naive timestamps)
loads unchanged. Unknown fields, top-level or per entry, survive a rewrite.
A file that cannot be parsed is reported with its line and column and is never
overwritten.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar, overload

import orjson

from control_plane.errors import MetadataError

T = TypeVar("T")

METADATA_FILENAME = ".nexus_meta.json"
SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 60.0

_REQUIRED = ("commit_hash", "model_name", "storage_uri")
_SEED_DEFAULTS = {"file_size": None, "timestamp": None, "is_latest": False}
_ORDER = (*_REQUIRED, *_SEED_DEFAULTS)


class _Field(Generic[T]):
    """A typed attribute stored in the entry's JSON dict; None removes an optional key."""

    def __init__(self, default: T | None = None, *, keep_none: bool = False) -> None:
        self.default = default
        self.keep_none = keep_none

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, entry: None, owner: type) -> _Field[T]: ...

    @overload
    def __get__(self, entry: ModelEntry, owner: type) -> T | None: ...

    def __get__(self, entry: ModelEntry | None, owner: type) -> T | _Field[T] | None:
        if entry is None:
            return self
        return entry.data.get(self.name, self.default)

    def __set__(self, entry: ModelEntry, value: T | None) -> None:
        if value is None and not self.keep_none:
            entry.data.pop(self.name, None)
        else:
            entry.data[self.name] = value


class ModelEntry:
    """One stored version of one model: a typed view over its JSON object.

    The dict is the storage, so fields this version of nexus does not know
    survive every rewrite untouched, and wrapping 100,000 parsed entries costs
    one small object each.
    """

    __slots__ = ("data",)

    commit_hash: str = _Field(keep_none=True)  # type: ignore[assignment]
    model_name: str = _Field(keep_none=True)  # type: ignore[assignment]
    storage_uri: str = _Field(keep_none=True)  # type: ignore[assignment]
    file_size = _Field[int](keep_none=True)
    timestamp = _Field[str](keep_none=True)
    sha256 = _Field[str]()
    format = _Field[str]()
    metrics = _Field[dict[str, float]]()
    params = _Field[dict[str, Any]]()
    tags = _Field[dict[str, str]]()
    message = _Field[str]()
    author = _Field[str]()
    dirty = _Field[bool]()
    # lifecycle: stages, approval, provenance, lineage, history
    stage = _Field[str]()
    status = _Field[str]()
    status_reason = _Field[str]()
    owner = _Field[str]()
    training_data = _Field[str]()
    base_model = _Field[str]()
    training_config_hash = _Field[str]()
    environment = _Field[dict[str, str]]()
    parents = _Field[list[dict[str, str]]]()
    lineage_type = _Field[str]()
    history = _Field[list[dict[str, Any]]]()

    def __init__(self, commit_hash: str, model_name: str, storage_uri: str, **fields: Any) -> None:
        self.data: dict[str, Any] = {
            "commit_hash": commit_hash,
            "model_name": model_name,
            "storage_uri": storage_uri,
            **_SEED_DEFAULTS,
        }
        for name, value in fields.items():
            if not isinstance(getattr(type(self), name, None), _Field):
                raise TypeError(f"ModelEntry has no field '{name}'")
            setattr(self, name, value)

    @property
    def is_latest(self) -> bool:
        return bool(self.data.get("is_latest", False))

    @is_latest.setter
    def is_latest(self, value: bool) -> None:
        self.data["is_latest"] = bool(value)

    @property
    def short_hash(self) -> str:
        return self.commit_hash[:7]

    @property
    def created(self) -> datetime:
        """The timestamp as an aware datetime; the seed's naive times are read as UTC."""
        return parse_timestamp(self.timestamp)

    @property
    def label(self) -> str:
        return f"{self.model_name}@{self.short_hash}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object itself (seed fields first for new entries; unknown keys kept)."""
        return self.data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelEntry) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ModelEntry({self.label})"


_EPOCH = datetime.min.replace(tzinfo=UTC)


def parse_timestamp(stamp: Any) -> datetime:
    """An aware datetime; naive times (the seed's) are read as UTC, junk as the epoch."""
    if not stamp:
        return _EPOCH
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return _EPOCH
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
    for key in _REQUIRED:
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

    def read(self) -> MetadataDocument:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return MetadataDocument()
        except OSError as exc:
            raise MetadataError(f"cannot read {self.path}: {exc.strerror}.") from exc
        return parse_document(data, self.path)

    @contextlib.contextmanager
    def update(self) -> Iterator[MetadataDocument]:
        """Lock, read, let the caller change the document, then write it atomically.

        If the caller raises, nothing is written.
        """
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
            document = self.read()
            yield document
            data = document.to_bytes()
            atomic_write(self.path, data)
            if self._on_write is not None:
                self._on_write(data, document)
        finally:
            lock.release()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
