"""The Python API behind the CLI and the model server.

    from control_plane import Registry
    Registry().store("model.pt", "my_model", metrics={"accuracy": 0.92})

Store order: validate, check Git, hash, upload, and only then record the entry
(atomically, under a lock). Load order: resolve, download beside DEST, verify
size and sha256, rename into place.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from control_plane import lifecycle, listing, query
from control_plane.config import NexusConfig, load_config
from control_plane.errors import (
    ConflictError,
    GitError,
    IntegrityError,
    NexusError,
    NotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    UsageError,
)
from control_plane.formats import detect_format
from control_plane.hashing import ProgressCallback, sha256_file
from control_plane.lineage import ancestors, descendants, split_model_ref, would_cycle
from control_plane.lineage import key as lineage_key
from control_plane.metadata import (
    METADATA_FILENAME,
    MetadataDocument,
    MetadataFile,
    ModelEntry,
)
from control_plane.provenance import TrainingConfig, capture_environment, read_training_config
from control_plane.resolve import find_version, resolve_ref, validate_model_name
from control_plane.storage import StorageBackend, open_backend

if TYPE_CHECKING:
    from control_plane.git import GitRepo

WORKDIR = ".nexus"
_EXTENSION = re.compile(r"^[a-z0-9]{1,16}$")


class ProgressReporter(Protocol):
    """Something that shows a transfer: `start` returns the per-chunk callback."""

    def start(self, description: str, total: int) -> ProgressCallback: ...


@dataclass(frozen=True)
class StoreResult:
    """What `store` did: the entry, whether bytes moved, and what to tell the user."""

    entry: ModelEntry
    already_stored: bool
    uploaded: bool
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RollbackResult:
    entry: ModelEntry
    previous: ModelEntry | None


class Registry:
    """Model versions linked to Git commits, with bytes in a storage backend."""

    def __init__(
        self,
        start: Path | str | None = None,
        *,
        config: NexusConfig | None = None,
        backend: StorageBackend | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._start = Path(start or Path.cwd()).resolve()
        # Serving and listing need only the metadata file (e.g. mounted into a container),
        # so Git (and gitpython's import) is touched only by commands that record a commit.
        self.root = _find_root(self._start)
        self._git: GitRepo | None = None
        self.config = config or load_config(self.root, environ)
        self._backend = backend
        self._index_path = self.root / WORKDIR / "list-index"
        self.metadata = MetadataFile(
            self.root / METADATA_FILENAME,
            self.root / WORKDIR / "meta.lock",
            on_write=lambda data, document: listing.refresh(self._index_path, data, document),
        )

    @property
    def backend(self) -> StorageBackend:
        """Created on first use: listing and showing never import a cloud SDK."""
        if self._backend is None:
            self._backend = open_backend(self.config, self.root)
        return self._backend

    # -- queries ---------------------------------------------------------------

    def list(
        self,
        model_name: str | None = None,
        *,
        filters: Sequence[query.Filter] = (),
        sort_metric: str | None = None,
        limit: int | None = None,
    ) -> list[ModelEntry]:
        """Entries, newest first (or by a metric, descending), optionally filtered."""
        entries = self.metadata.read().entries
        return query.select(entries, model_name, filters, sort_metric=sort_metric, limit=limit)

    def list_summaries(
        self,
        model_name: str | None = None,
        *,
        filters: Sequence[query.Filter] = (),
        sort_metric: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[listing.Summary]:
        """`list` with only what the table shows, from the listing index when current."""
        rows = listing.summaries(self.metadata, self._index_path)
        return query.select(rows, model_name, filters, sort_metric=sort_metric, limit=limit)

    def resolve(self, ref: str, model_name: str | None = None) -> ModelEntry:
        """`latest`, a full commit hash or a unique prefix of 4+ hex characters."""
        return resolve_ref(self.metadata.read(), ref, model_name)

    # -- changes ---------------------------------------------------------------

    def store(
        self,
        path: Path | str,
        model_name: str,
        *,
        message: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        owner: str | None = None,
        training_data: str | None = None,
        base_model: str | None = None,
        config_file: Path | str | None = None,
        parents: Sequence[str] = (),
        lineage_type: str | None = None,
        allow_dirty: bool = False,
        force: bool = False,
        progress: ProgressReporter | None = None,
    ) -> StoreResult:
        """Upload `path` as `model_name` at HEAD and record it as the latest version."""
        validate_model_name(model_name)
        source = Path(path)
        if not source.is_file():
            raise UsageError(f"{source} is not a file.", hint="pass the path of a model file")
        metrics = _check_metrics(metrics)
        _check_lineage(parents, lineage_type)
        training = read_training_config(Path(config_file)) if config_file else None
        merged_params = {**((training.params if training else None) or {}), **(params or {})}
        git = self._require_git()
        state = git.state(allow_dirty=allow_dirty)
        warnings: list[str] = []
        notes: list[str] = []
        if git.is_tracked(source):
            warnings.append(
                f"{source} is tracked by Git; binaries belong in the store, not in Git "
                f"(git rm --cached {source})."
            )
        size = source.stat().st_size
        sha256 = sha256_file(source, _callback(progress, "hashing", size))
        document = self.metadata.read()
        existing = find_version(document, model_name, state.commit_hash)
        if existing is not None:
            return self._already_stored(existing, sha256, warnings)
        parent_entries = [
            resolve_ref(document, ref, model) for model, ref in map(split_model_ref, parents)
        ]
        if would_cycle(document, (model_name, state.commit_hash), map(lineage_key, parent_entries)):
            raise ConflictError(
                f"{model_name}@{state.commit_hash[:7]} cannot be its own ancestor.",
                hint="name parents that are older versions, not this one",
            )
        if training is not None:
            warnings.extend(self._check_config_twin(document, model_name, training, force))

        twin = next(
            (e for e in document.entries if e.model_name == model_name and e.sha256 == sha256),
            None,
        )
        if twin is not None and self.backend.exists(twin.storage_uri):
            key, uploaded = twin.storage_uri, False
            notes.append(f"identical bytes to {twin.label}: the new entry points at its object.")
        else:
            key = self._key(model_name, state.commit_hash, source)
            uploaded = self._upload_once(source, key, sha256, size, progress)
        self._prepare_workdir()
        with self.metadata.update() as document:
            existing = find_version(document, model_name, state.commit_hash)
            if existing is not None:  # a concurrent store of the same version won
                return self._already_stored(existing, sha256, warnings)
            entry = ModelEntry(
                commit_hash=state.commit_hash,
                model_name=model_name,
                storage_uri=key,
                file_size=size,
                timestamp=lifecycle.now(),
                sha256=sha256,
                format=detect_format(source),
                metrics=dict(metrics) if metrics else None,
                params=merged_params or None,
                tags={str(k): str(v) for k, v in tags.items()} if tags else None,
                message=message,
                author=state.author,
                dirty=True if state.dirty else None,
                owner=owner,
                training_data=training_data,
                base_model=base_model,
                training_config_hash=training.sha256 if training else None,
                environment=capture_environment(),
                parents=[
                    {"model": e.model_name, "commit_hash": e.commit_hash} for e in parent_entries
                ]
                or None,
                lineage_type=lineage_type,
            )
            lifecycle.set_status(entry, lifecycle.PENDING_REVIEW, state.author)
            document.entries.append(entry)
            lifecycle.set_latest(document, entry, state.author)
        return StoreResult(
            entry,
            already_stored=False,
            uploaded=uploaded,
            warnings=tuple(warnings),
            notes=tuple(notes),
        )

    def load(
        self,
        ref: str,
        dest: Path | str,
        *,
        model_name: str | None = None,
        progress: ProgressReporter | None = None,
    ) -> tuple[ModelEntry, Path]:
        """Download a version to `dest` (a file, or a directory to keep the stored name)."""
        entry = self.resolve(ref, model_name)
        target = Path(dest)
        if target.is_dir():
            target = target / PurePosixPath(entry.storage_uri).name
        if not target.parent.is_dir():
            raise UsageError(f"{target.parent} is not a directory.", hint="create it first")
        return entry, self.fetch(entry, target, progress=progress)

    def verify(
        self, ref: str | None = None, model_name: str | None = None
    ) -> builtins.list[tuple[ModelEntry, StorageError | None]]:
        """Download and check stored versions (one, a model's, or all): (entry, failure or None).

        Versions that share an object (identical bytes) are checked once.
        """
        if ref is not None:
            entries = [self.resolve(ref, model_name)]
        else:
            entries = self.list(model_name)
            if model_name is not None and not entries:
                raise NotFoundError(
                    f"no model named '{model_name}' is stored.",
                    hint="run 'nexus list' to see the stored models",
                )
        self._prepare_workdir()
        checked: dict[tuple[str, str | None], StorageError | None] = {}
        results = []
        with tempfile.TemporaryDirectory(dir=self.root / WORKDIR) as tmp:
            for entry in entries:
                key = (entry.storage_uri, entry.sha256)
                if key not in checked:
                    try:
                        self.fetch(entry, Path(tmp) / "object")
                        checked[key] = None
                    except StorageError as exc:
                        checked[key] = exc
                results.append((entry, checked[key]))
        return results

    def fetch(
        self, entry: ModelEntry, dest: Path, *, progress: ProgressReporter | None = None
    ) -> Path:
        """Download beside `dest`, verify size and sha256, then rename into place.

        On any failure the temporary file is removed and `dest` is untouched.
        """
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            total = entry.file_size or 0
            self.backend.download(
                entry.storage_uri, tmp, progress=_callback(progress, "downloading", total)
            )
            verify_file(tmp, entry, progress)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dest

    def rollback(self, ref: str, model_name: str) -> RollbackResult:
        """Make an existing version the latest; nothing is deleted."""
        previous: list[ModelEntry | None] = []

        def change(document: MetadataDocument, entry: ModelEntry, who: str | None) -> None:
            latest = (e for e in document.entries if e.model_name == model_name and e.is_latest)
            previous.append(next(latest, None))
            lifecycle.set_latest(document, entry, who)

        entry = self._change(ref, model_name, change)
        return RollbackResult(entry=entry, previous=previous[0])

    def promote(
        self, ref: str, model_name: str, stage: str, *, archive_previous: bool = False
    ) -> tuple[ModelEntry, ModelEntry | None]:
        """Give `stage` (staging or production) to a version; return it and the one before."""
        previous: list[ModelEntry | None] = []

        def change(document: MetadataDocument, entry: ModelEntry, who: str | None) -> None:
            previous.append(
                lifecycle.promote(
                    document,
                    entry,
                    stage,
                    archive_previous=archive_previous,
                    require_approval=self.config.require_approval,
                    who=who,
                )
            )

        return self._change(ref, model_name, change), previous[0]

    def archive(self, ref: str, model_name: str) -> ModelEntry:
        return self._change(
            ref, model_name, lambda d, e, who: lifecycle.set_stage(e, lifecycle.ARCHIVED, who)
        )

    def approve(self, ref: str, model_name: str) -> ModelEntry:
        return self._change(
            ref, model_name, lambda d, e, who: lifecycle.set_status(e, lifecycle.APPROVED, who)
        )

    def reject(self, ref: str, model_name: str, reason: str) -> ModelEntry:
        if not reason.strip():
            raise UsageError("a rejection needs a --reason.")
        return self._change(
            ref,
            model_name,
            lambda d, e, who: lifecycle.set_status(e, lifecycle.REJECTED, who, reason.strip()),
        )

    def lineage(self, model_ref: str) -> dict[str, Any]:
        """A version with its ancestors and descendants, as nested dicts."""
        model, ref = split_model_ref(model_ref)
        document = self.metadata.read()
        entry = resolve_ref(document, ref, model)
        return {
            "model": entry.model_name,
            "commit_hash": entry.commit_hash,
            "lineage_type": entry.lineage_type,
            "ancestors": ancestors(document, entry),
            "descendants": descendants(document, entry),
        }

    def history(self, model_name: str) -> builtins.list[dict[str, Any]]:
        """Every recorded change to the model's versions, oldest first."""
        validate_model_name(model_name)
        versions = [e for e in self.metadata.read().entries if e.model_name == model_name]
        if not versions:
            raise NotFoundError(
                f"no model named '{model_name}' is stored.",
                hint="run 'nexus list' to see the stored models",
            )
        events = [
            {"commit_hash": e.commit_hash, **event}
            for e in versions
            for event in e.history or []
            if isinstance(event, dict)
        ]
        return sorted(events, key=lambda event: str(event.get("when", "")))

    # -- helpers ---------------------------------------------------------------

    def _change(
        self,
        ref: str,
        model_name: str,
        change: Callable[[MetadataDocument, ModelEntry, str | None], None],
    ) -> ModelEntry:
        """Resolve `ref` of `model_name` under the lock, apply `change`, write atomically."""
        validate_model_name(model_name)
        who = self._who()
        self._prepare_workdir()
        with self.metadata.update() as document:
            entry = resolve_ref(document, ref, model_name)
            change(document, entry, who)
        return entry

    def _who(self) -> str | None:
        try:
            return self._require_git().author()
        except GitError:
            return None

    def _check_config_twin(
        self, document: MetadataDocument, model_name: str, training: TrainingConfig, force: bool
    ) -> builtins.list[str]:
        twin = next(
            (
                e
                for e in document.entries
                if e.model_name == model_name and e.training_config_hash == training.sha256
            ),
            None,
        )
        if twin is None:
            return []
        if self.config.dedup_by_config and not force:
            raise ConflictError(
                f"{twin.label} was trained from the same config; dedup_by_config refuses "
                "a second version of it.",
                hint="change the config, or pass --force to store it anyway",
            )
        return [f"{twin.label} was trained from the same config: a likely retrain of it."]

    def _require_git(self) -> GitRepo:
        if self._git is None:
            from control_plane.git import GitRepo  # gitpython is slow to import

            self._git = GitRepo(self._start)
        return self._git

    def _key(self, model_name: str, commit: str, source: Path) -> str:
        ext = source.suffix.lstrip(".").lower()
        name = f"{commit}.{ext if _EXTENSION.match(ext) else 'pt'}"
        parts = [self.config.prefix, model_name, name] if self.config.prefix else [model_name, name]
        return "/".join(parts)

    def _upload_once(
        self, source: Path, key: str, sha256: str, size: int, progress: ProgressReporter | None
    ) -> bool:
        """Upload unless the same bytes are there already; never replace other bytes."""
        try:
            info = self.backend.stat(key)
        except ObjectNotFoundError:
            try:
                self.backend.upload(
                    source, key, sha256=sha256, progress=_callback(progress, "uploading", size)
                )
            except ObjectExistsError:
                info = self.backend.stat(key)  # lost a race: judge what the winner wrote
            else:
                return True
        if info.size == size and (info.sha256 or self._stored_sha256(key)) == sha256:
            return False
        raise ObjectExistsError(
            f"{self.backend.uri(key)} already holds other bytes; it will not be overwritten.",
            hint="another store wrote this key without recording it; inspect or delete the object",
        )

    def _stored_sha256(self, key: str) -> str:
        """Hash an object the store holds without a recorded sha256 (rare: an orphan)."""
        self._prepare_workdir()
        with tempfile.TemporaryDirectory(dir=self.root / WORKDIR) as tmp:
            path = Path(tmp) / "object"
            self.backend.download(key, path)
            return sha256_file(path)

    def _already_stored(
        self, existing: ModelEntry, sha256: str, warnings: Sequence[str]
    ) -> StoreResult:
        if existing.sha256 not in (None, sha256):
            raise ConflictError(
                f"{existing.label} is already stored with other bytes.",
                hint="commit your changes first, so the new model gets its own commit",
            )
        return StoreResult(existing, already_stored=True, uploaded=False, warnings=tuple(warnings))

    def _prepare_workdir(self) -> None:
        """Create `.nexus/` (lock, default store) and keep it out of Git."""
        (self.root / WORKDIR).mkdir(exist_ok=True)
        if (self.root / ".git").exists():
            ensure_gitignored(self.root / ".gitignore", f"{WORKDIR}/")


def verify_file(path: Path, entry: ModelEntry, progress: ProgressReporter | None = None) -> None:
    """Raise IntegrityError unless `path` has the entry's size and sha256."""
    size = path.stat().st_size
    if entry.file_size is not None and size != entry.file_size:
        raise IntegrityError(
            f"{entry.label}: the stored object has {size} bytes, the metadata says "
            f"{entry.file_size}; it was changed or truncated in the store.",
            hint="restore the object, or store the model again from its commit",
        )
    if entry.sha256 is not None:
        actual = sha256_file(path, _callback(progress, "verifying", size))
        if actual != entry.sha256:
            raise IntegrityError(
                f"{entry.label}: the stored object's sha256 is {actual[:12]}…, the metadata "
                f"says {entry.sha256[:12]}…; it was changed in the store.",
                hint="restore the object, or store the model again from its commit",
            )


def ensure_gitignored(gitignore: Path, pattern: str) -> None:
    """Append `pattern` to a .gitignore unless an equivalent line is there."""
    try:
        text = gitignore.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    bare = pattern.strip("/")
    if any(line.strip().strip("/") == bare for line in text.splitlines()):
        return
    separator = "" if not text or text.endswith("\n") else "\n"
    with gitignore.open("a", encoding="utf-8") as fh:
        fh.write(f"{separator}{pattern}\n")


def _check_lineage(parents: Sequence[str], lineage_type: str | None) -> None:
    if lineage_type is not None and lineage_type not in lifecycle.LINEAGE_TYPES:
        raise UsageError(
            f"--lineage-type must be one of {', '.join(lifecycle.LINEAGE_TYPES)}, "
            f"not '{lineage_type}'."
        )
    if lineage_type is not None and not parents:
        raise UsageError(f"--lineage-type {lineage_type} needs at least one --parent MODEL@REF.")
    if lineage_type == "merge" and len(parents) < 2:
        raise UsageError("--lineage-type merge needs two or more --parent MODEL@REF.")
    if lineage_type not in (None, "merge") and len(parents) > 1:
        raise UsageError(
            f"{lineage_type} takes one --parent; use --lineage-type merge for several."
        )


def _check_metrics(metrics: Mapping[str, float] | None) -> dict[str, float] | None:
    if not metrics:
        return None
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        number_like = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_like or not math.isfinite(value):
            raise UsageError(f"metric '{key}' must be a finite number, not {value!r}.")
        clean[str(key)] = value
    return clean


def _callback(
    progress: ProgressReporter | None, description: str, total: int
) -> ProgressCallback | None:
    return progress.start(description, total) if progress is not None else None


def _find_root(start: Path) -> Path:
    """The Git working tree above `start`, else the directory holding the metadata file."""
    for marker in (".git", METADATA_FILENAME):
        for directory in (start, *start.parents):
            if (directory / marker).exists():
                return directory
    return start


__all__ = [
    "NexusError",
    "ProgressReporter",
    "Registry",
    "RollbackResult",
    "StoreResult",
    "ensure_gitignored",
    "validate_model_name",
    "verify_file",
]
