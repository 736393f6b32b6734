"""The Python API behind the CLI and the model server.

    from control_plane import Registry
    Registry().store("model.pt", "my_model", metrics={"accuracy": 0.92})

Store order: validate, check Git, hash, upload, and only then record the entry
(atomically, under a lock). Load order: resolve, download beside DEST, verify
size and sha256, rename into place.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from control_plane.config import NexusConfig, load_config
from control_plane.errors import (
    AmbiguousRefError,
    ConflictError,
    IntegrityError,
    NexusError,
    NotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    UsageError,
)
from control_plane.formats import detect_format
from control_plane.hashing import ProgressCallback, sha256_file
from control_plane.metadata import (
    METADATA_FILENAME,
    MetadataDocument,
    MetadataFile,
    ModelEntry,
)
from control_plane.storage import StorageBackend, open_backend

if TYPE_CHECKING:
    from control_plane.git import GitRepo

WORKDIR = ".nexus"
_MODEL_NAME = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,128}$")
_COMMIT_REF = re.compile(r"^[0-9a-f]{4,40}$")
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


@dataclass(frozen=True)
class RollbackResult:
    entry: ModelEntry
    previous: ModelEntry | None


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name) or name in {".", ".."}:
        raise UsageError(
            f"'{name}' is not a valid model name.",
            hint="use 1-128 letters, digits, '.', '_' or '-', not starting with '.'",
        )
    return name


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
        self.backend = backend or open_backend(self.config, self.root)
        self.metadata = MetadataFile(
            self.root / METADATA_FILENAME, self.root / WORKDIR / "meta.lock"
        )

    # -- queries ---------------------------------------------------------------

    def list(self, model_name: str | None = None) -> list[ModelEntry]:
        """Entries, newest first, optionally of one model."""
        entries = self.metadata.read().entries
        if model_name is not None:
            entries = [e for e in entries if e.model_name == model_name]
        indexed = sorted(enumerate(entries), key=lambda p: (p[1].created, p[0]), reverse=True)
        return [entry for _, entry in indexed]

    def resolve(self, ref: str, model_name: str | None = None) -> ModelEntry:
        """`latest`, a full commit hash or a unique prefix of 4+ hex characters."""
        return _resolve(self.metadata.read(), ref, model_name)

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
        allow_dirty: bool = False,
        progress: ProgressReporter | None = None,
    ) -> StoreResult:
        """Upload `path` as `model_name` at HEAD and record it as the latest version."""
        validate_model_name(model_name)
        source = Path(path)
        if not source.is_file():
            raise UsageError(f"{source} is not a file.", hint="pass the path of a model file")
        metrics = _check_metrics(metrics)
        git = self._require_git()
        state = git.state(allow_dirty=allow_dirty)
        warnings: list[str] = []
        if git.is_tracked(source):
            warnings.append(
                f"{source} is tracked by Git; binaries belong in the store, not in Git "
                f"(git rm --cached {source})."
            )
        size = source.stat().st_size
        sha256 = sha256_file(source, _callback(progress, "hashing", size))
        existing = _find(self.metadata.read(), model_name, state.commit_hash)
        if existing is not None:
            return self._already_stored(existing, sha256, warnings)

        key = self._key(model_name, state.commit_hash, source)
        uploaded = self._upload_once(source, key, sha256, size, progress)
        self._prepare_workdir()
        with self.metadata.update() as document:
            existing = _find(document, model_name, state.commit_hash)
            if existing is not None:  # a concurrent store of the same version won
                return self._already_stored(existing, sha256, warnings)
            entry = ModelEntry(
                commit_hash=state.commit_hash,
                model_name=model_name,
                storage_uri=key,
                file_size=size,
                timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
                sha256=sha256,
                format=detect_format(source),
                metrics=dict(metrics) if metrics else None,
                params=dict(params) if params else None,
                tags={str(k): str(v) for k, v in tags.items()} if tags else None,
                message=message,
                author=state.author,
                dirty=True if state.dirty else None,
            )
            document.entries.append(entry)
            document.set_latest(entry)
        return StoreResult(entry, already_stored=False, uploaded=uploaded, warnings=tuple(warnings))

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
        validate_model_name(model_name)
        self._prepare_workdir()
        with self.metadata.update() as document:
            entry = _resolve(document, ref, model_name)
            previous = next(
                (e for e in document.entries if e.model_name == model_name and e.is_latest), None
            )
            document.set_latest(entry)
        return RollbackResult(entry=entry, previous=previous)

    # -- helpers ---------------------------------------------------------------

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


def _resolve(document: MetadataDocument, ref: str, model_name: str | None) -> ModelEntry:
    entries = document.entries
    if model_name is not None:
        validate_model_name(model_name)
        entries = [e for e in entries if e.model_name == model_name]
        if not entries:
            raise NotFoundError(
                f"no model named '{model_name}' is stored.",
                hint="run 'nexus list' to see the stored models",
            )
    if not entries:
        raise NotFoundError("no models are stored yet.", hint="run 'nexus store PATH MODEL_NAME'")
    if ref == "latest":
        names = sorted({e.model_name for e in entries})
        if len(names) > 1:
            raise AmbiguousRefError(
                f"'latest' is ambiguous: {len(names)} models are stored ({', '.join(names)}).",
                hint="pass --model-name (NEXUS_MODEL_NAME for the model server)",
            )
        flagged = [e for e in entries if e.is_latest] or entries
        return max(flagged, key=lambda e: e.created)
    needle = ref.lower()
    if not _COMMIT_REF.match(needle):
        raise UsageError(
            f"'{ref}' is not a version reference.",
            hint="use 'latest', a commit hash, or a unique prefix of at least 4 hex characters",
        )
    matches = [
        e
        for e in entries
        if e.commit_hash.lower().startswith(needle)
        or (len(e.commit_hash) >= 4 and needle.startswith(e.commit_hash.lower()))
    ]
    if not matches:
        scope = f"model '{model_name}' has" if model_name else "there is"
        raise NotFoundError(
            f"{scope} no version at '{ref}'.",
            hint=f"run 'nexus list{' --model-name ' + model_name if model_name else ''}' "
            "to see the versions",
        )
    if len(matches) > 1:
        shown = ", ".join(e.model_name + "@" + e.commit_hash[:12] for e in matches[:10])
        raise AmbiguousRefError(
            f"'{ref}' matches {len(matches)} versions: {shown}.",
            hint="use more characters of the hash" + ("" if model_name else " or --model-name"),
        )
    return matches[0]


def _find(document: MetadataDocument, model_name: str, commit: str) -> ModelEntry | None:
    return next(
        (e for e in document.entries if e.model_name == model_name and e.commit_hash == commit),
        None,
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
