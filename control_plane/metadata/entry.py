"""One version of one model: a typed view over its JSON object in `.nexus_meta.json`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, overload

from control_plane.core.folders import TREE_FORMATS

T = TypeVar("T")

REQUIRED_FIELDS = ("commit_hash", "model_name", "storage_uri")

# A model's stages: at most one version holds each of STAGES; any number are archived.
STAGING = "staging"
PRODUCTION = "production"
ARCHIVED = "archived"
STAGES = (STAGING, PRODUCTION)
_SEED_DEFAULTS = {"file_size": None, "timestamp": None, "is_latest": False}


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


class VersionFacts:
    """What a full entry and a listing row derive the same way from their fields."""

    __slots__ = ()
    model_name: str
    commit_hash: str
    timestamp: str | None

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

    @property
    def key(self) -> tuple[str, str]:
        """What identifies a version across branches and merges: (model, commit)."""
        return (self.model_name, self.commit_hash)


class ModelEntry(VersionFacts):
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
    # team registry: numbers, aliases, directory models
    version = _Field[int]()
    aliases = _Field[list[str]]()
    file_count = _Field[int]()
    # trust: the signature and the signed approval, each a bundle in the store
    signature = _Field[dict[str, Any]]()  # the trust record of a signed version
    tensors = _Field[dict[str, Any]]()  # the model's signature: its inputs and outputs
    requires = _Field[dict[str, Any]]()  # the hardware it needs (control_plane.core.hardware)
    architecture = _Field[str]()  # a transformers folder's model class (config.json)
    task = _Field[str]()  # what a transformers folder is served for (text-classification, ...)
    approval = _Field[dict[str, Any]]()

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

    @classmethod
    def wrap(cls, data: dict[str, Any]) -> ModelEntry:
        """A view over an existing JSON object (checked by the caller), without copying."""
        entry = cls.__new__(cls)
        entry.data = data
        return entry

    @property
    def is_tree(self) -> bool:
        """Stored as a folder (a manifest and its files), whatever kind of folder it is."""
        return self.format in TREE_FORMATS

    @property
    def is_latest(self) -> bool:
        return bool(self.data.get("is_latest", False))

    @is_latest.setter
    def is_latest(self, value: bool) -> None:
        self.data["is_latest"] = bool(value)

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
