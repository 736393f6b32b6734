"""The store pipeline: validate, check Git, hash, upload, and only then record the entry.

The entry is written atomically under the metadata lock, so an upload that
fails leaves no entry, and a concurrent store of the same version is noticed
under the lock rather than recorded twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_plane.core.errors import ConflictError, ObjectExistsError, UsageError
from control_plane.core.folders import DIRECTORY, TRANSFORMERS, FolderModel, detect_folder
from control_plane.core.formats import detect_format
from control_plane.core.hardware import Requirements
from control_plane.core.hashing import sha256_file
from control_plane.core.units import human_size
from control_plane.metadata import MetadataDocument, MetadataFile, ModelEntry
from control_plane.registry import lifecycle
from control_plane.registry.lineage import split_model_ref, would_cycle
from control_plane.registry.objects import Objects, ProgressReporter, callback, model_folder
from control_plane.registry.provenance import (
    TrainingConfig,
    capture_environment,
    read_training_config,
)
from control_plane.registry.resolve import find_version, resolve_ref, validate_model_name
from control_plane.registry.signatures import signature_for
from control_plane.registry.tree import (
    MANIFEST_SUFFIX,
    LocalTree,
    TreeFile,
    content_id,
    scan_tree,
)
from control_plane.registry.tree_transfer import hash_tree
from control_plane.registry.workspace import Workspace
from nexus_common.signature import Signature

if TYPE_CHECKING:
    from control_plane.registry.git import GitState
    from control_plane.settings import NexusConfig

_EXTENSION = re.compile(r"^[a-z0-9]{1,16}$")


@dataclass(frozen=True)
class StoreRequest:
    """Everything `nexus store` (or a training script) says about a new version."""

    path: Path
    model_name: str
    message: str | None = None
    metrics: Mapping[str, float] | None = None
    params: Mapping[str, Any] | None = None
    tags: Mapping[str, str] | None = None
    owner: str | None = None
    training_data: str | None = None
    base_model: str | None = None
    config_file: Path | None = None
    parents: Sequence[str] = ()
    lineage_type: str | None = None
    allow_dirty: bool = False
    force: bool = False
    sign: bool = False
    signing_key: Path | None = None
    signature: Path | None = None  # a JSON or YAML file declaring the inputs and outputs
    example_input: Path | None = None  # an .npz a TorchScript module is run on, once
    handler: str | None = None  # module:Class whose declared signature is recorded
    requires: Requirements | None = None  # the hardware it needs
    task: str | None = None  # a transformers folder's task, instead of config.json's

    @classmethod
    def of(
        cls, request: StoreRequest | Path | str, model_name: str | None, fields: Mapping[str, Any]
    ) -> StoreRequest:
        """`Registry.store`'s two forms: a request, or a path, a name and the fields."""
        if isinstance(request, StoreRequest):
            return request
        if model_name is None:
            raise UsageError("store needs a model name.")
        return cls(Path(request), model_name, **fields)


Signer = Callable[[ModelEntry, dict[str, str]], dict[str, Any]]
"""Signs a new version's files (name -> sha256), storing the bundle; returns its record."""


@dataclass(frozen=True)
class StoreResult:
    """What `store` did: the entry, whether bytes moved, and what to tell the user."""

    entry: ModelEntry
    already_stored: bool
    uploaded: bool
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    recorded: tuple[tuple[ModelEntry, dict[str, Any]], ...] = ()  # the history it wrote


@dataclass
class _Checked:
    """What the request says, checked, and the Git tree it was trained from."""

    source: Path
    tree: LocalTree | None
    metrics: dict[str, float] | None
    training: TrainingConfig | None
    params: dict[str, Any]
    git: GitState
    tensors: Signature | None = None
    folder: FolderModel | None = None  # what kind of folder a directory model is
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Content:
    """The bytes' identity: a file's sha256 (also its content id), or a tree's files."""

    size: int
    sha256: str | None
    identity: str
    hashed: list[TreeFile] | None


@dataclass(frozen=True)
class _Placed:
    """Where the bytes are now, and what the entry records about them."""

    key: str
    sha256: str
    format: str | None
    file_count: int | None
    uploaded: bool


@dataclass
class StorePipeline:
    """One store, step by step, over the registry's parts."""

    workspace: Workspace
    metadata: MetadataFile
    objects: Objects
    config: NexusConfig
    signer: Signer | None = None

    def run(self, request: StoreRequest, progress: ProgressReporter | None) -> StoreResult:
        """Check, hash, find the lineage, upload, record: each a stage below."""
        checked = self._check(request)
        content = self._hash(checked, progress)
        document = self.metadata.read()
        existing = find_version(document, request.model_name, checked.git.commit_hash)
        if existing is not None:
            return self._already_stored(existing, content.identity, checked.warnings)
        parents = self._lineage(document, request, checked)
        placed = self._upload(document, request, checked, content, progress)
        if isinstance(placed, StoreResult):
            return placed  # a rival store of this version won the race
        entry = self._entry(request, checked, content, placed, parents)
        return self._record(request, checked, content, placed, entry)

    def _check(self, request: StoreRequest) -> _Checked:
        """The request's values and the Git tree, before a byte is read."""
        validate_model_name(request.model_name)
        source = request.path
        if not source.is_file() and not source.is_dir():
            raise UsageError(
                f"{source} is not a file or a directory.", hint="pass the path of a model"
            )
        tree = scan_tree(source) if source.is_dir() else None
        if tree is None and request.task is not None:
            raise UsageError("--task applies to a transformers folder, not to a file.")
        folder = detect_folder(source, request.task) if tree is not None else None
        metrics = check_metrics(request.metrics)
        check_lineage(request.parents, request.lineage_type)
        training = read_training_config(request.config_file) if request.config_file else None
        params = {**((training.params if training else None) or {}), **(request.params or {})}
        git = self.workspace.git()
        tensors = signature_for(
            source,
            None if tree is not None else detect_format(source),
            request.signature,
            request.example_input,
            request.handler,
            folder,
        )
        checked = _Checked(
            source,
            tree,
            metrics,
            training,
            params,
            git.state(allow_dirty=request.allow_dirty),
            tensors,
            folder,
        )
        checked.warnings += _folder_warnings(folder)
        if git.is_tracked(source):
            checked.warnings.append(
                f"{source} is tracked by Git; binaries belong in the store, not in Git "
                f"(git rm --cached {source})."
            )
        return checked

    def _hash(self, checked: _Checked, progress: ProgressReporter | None) -> _Content:
        """The file's sha256, or every file's and the tree's content id."""
        if checked.tree is None:
            size = checked.source.stat().st_size
            sha256 = sha256_file(checked.source, callback(progress, "hashing", size))
            return _Content(size, sha256, sha256, None)
        size = sum(file_size for _, _, file_size in checked.tree.files)
        hashed = hash_tree(checked.tree, callback(progress, "hashing", size))
        return _Content(size, None, content_id(hashed, checked.tree.dirs), hashed)

    def _lineage(
        self, document: MetadataDocument, request: StoreRequest, checked: _Checked
    ) -> list[ModelEntry]:
        """The parents named (never the version itself, nor a descendant); a twin config."""
        parents = [
            resolve_ref(document, ref, m) for m, ref in map(split_model_ref, request.parents)
        ]
        key = (request.model_name, checked.git.commit_hash)
        if would_cycle(document, key, (e.key for e in parents)):
            raise ConflictError(
                f"{request.model_name}@{checked.git.commit_hash[:7]} cannot be its own ancestor.",
                hint="name parents that are older versions, not this one",
            )
        if checked.training is not None:
            checked.warnings.extend(self._config_twin(document, request, checked.training))
        return parents

    def _upload(
        self,
        document: MetadataDocument,
        request: StoreRequest,
        checked: _Checked,
        content: _Content,
        progress: ProgressReporter | None,
    ) -> _Placed | StoreResult:
        """The bytes into the store, once: a tree file by file (those the store lacks), a
        file under its key, or an identical earlier object reused."""
        key = self._key(request.model_name, checked.git.commit_hash, checked.source)
        if checked.tree is not None:
            assert content.hashed is not None
            folder = self._folder(request.model_name) + "files/"
            done = self.objects.upload_tree(
                checked.tree, content.hashed, key, folder, document.entries
            )
            checked.notes.append(
                f"{done.uploaded_files} file{'' if done.uploaded_files == 1 else 's'} uploaded "
                f"({human_size(done.uploaded_bytes)}), "
                f"{done.reused_files} already in the store ({human_size(done.reused_bytes)} "
                "not uploaded again)."
            )
            return _Placed(
                key,
                done.manifest_sha256,
                checked.folder.format if checked.folder else DIRECTORY,
                len(content.hashed),
                done.uploaded_files > 0,
            )
        assert content.sha256 is not None
        fmt = detect_format(checked.source)
        versions = document.versions(request.model_name)
        twin = next((e for e in versions if e.sha256 == content.sha256), None)
        if twin is not None and self.objects.reuse(twin.storage_uri):
            checked.notes.append(
                f"identical bytes to {twin.label}: the new entry points at its object."
            )
            return _Placed(twin.storage_uri, content.sha256, fmt, None, False)
        try:
            uploaded = self.objects.upload_once(
                checked.source, key, content.sha256, content.size, progress
            )
        except ObjectExistsError:
            rival = find_version(self.metadata.read(), request.model_name, checked.git.commit_hash)
            if rival is None:
                raise
            return self._already_stored(rival, content.identity, checked.warnings)
        return _Placed(key, content.sha256, fmt, None, uploaded)

    def _entry(
        self,
        request: StoreRequest,
        checked: _Checked,
        content: _Content,
        placed: _Placed,
        parents: list[ModelEntry],
    ) -> ModelEntry:
        git, training = checked.git, checked.training
        return ModelEntry(
            commit_hash=git.commit_hash,
            model_name=request.model_name,
            storage_uri=placed.key,
            file_size=content.size,
            timestamp=lifecycle.now(),
            sha256=placed.sha256,
            format=placed.format,
            file_count=placed.file_count,
            metrics=checked.metrics,
            params=checked.params or None,
            tags={str(k): str(v) for k, v in request.tags.items()} if request.tags else None,
            message=request.message,
            author=git.author,
            dirty=True if git.dirty else None,
            owner=request.owner,
            training_data=request.training_data,
            base_model=request.base_model,
            training_config_hash=training.sha256 if training else None,
            environment=capture_environment(),
            parents=[{"model": e.model_name, "commit_hash": e.commit_hash} for e in parents]
            or None,
            lineage_type=request.lineage_type,
            tensors=checked.tensors.to_json() if checked.tensors is not None else None,
            requires=request.requires.to_json() if request.requires else None,
            architecture=checked.folder.architecture if checked.folder else None,
            task=checked.folder.task if checked.folder else None,
        )

    def _record(
        self,
        request: StoreRequest,
        checked: _Checked,
        content: _Content,
        placed: _Placed,
        entry: ModelEntry,
    ) -> StoreResult:
        """Sign (when asked), then add the entry under the lock; a concurrent store of the
        same version that recorded first wins."""
        signature = None
        if self.signer is not None:
            if content.hashed is not None:
                files = {f.path: f.sha256 for f in content.hashed}
            else:
                files = {".": str(content.sha256)}
            signature = self.signer(entry, files)
        self.workspace.prepare()
        with self.metadata.update() as document:
            existing = find_version(document, request.model_name, checked.git.commit_hash)
            if existing is not None:
                return self._already_stored(existing, content.identity, checked.warnings)
            recorder = lifecycle.Recorder(document, checked.git.author)
            lifecycle.add_version(document, entry, recorder)
            if signature is not None:
                lifecycle.set_signature(entry, signature, recorder)
        return StoreResult(
            entry,
            already_stored=False,
            uploaded=placed.uploaded,
            warnings=tuple(checked.warnings),
            notes=tuple(checked.notes),
            recorded=tuple(recorder.recorded),
        )

    def _config_twin(
        self, document: MetadataDocument, request: StoreRequest, training: TrainingConfig
    ) -> list[str]:
        versions = document.versions(request.model_name)
        twin = next((e for e in versions if e.training_config_hash == training.sha256), None)
        if twin is None:
            return []
        if self.config.dedup_by_config and not request.force:
            raise ConflictError(
                f"{twin.label} was trained from the same config; dedup_by_config refuses "
                "a second version of it.",
                hint="change the config, or pass --force to store it anyway",
            )
        return [f"{twin.label} was trained from the same config: a likely retrain of it."]

    def _key(self, model_name: str, commit: str, source: Path) -> str:
        """`<prefix>/<model>/<commit>.<ext>`; a directory's is its manifest, `.tree.json`."""
        if source.is_dir():
            return f"{self._folder(model_name)}{commit}{MANIFEST_SUFFIX}"
        ext = source.suffix.lstrip(".").lower()
        return f"{self._folder(model_name)}{commit}.{ext if _EXTENSION.match(ext) else 'pt'}"

    def _folder(self, model_name: str) -> str:
        return model_folder(self.config.prefix, model_name)

    def _already_stored(
        self, existing: ModelEntry, content: str, warnings: Sequence[str]
    ) -> StoreResult:
        """Storing a version again is a no-op with the same bytes and a conflict with others."""
        stored = existing.sha256
        if existing.is_tree:
            manifest = self.objects.manifest(existing)
            stored = content_id(manifest.files, manifest.dirs)
        if stored not in (None, content):
            raise ConflictError(
                f"{existing.label} is already stored with other bytes.",
                hint="commit your changes first, so the new model gets its own commit",
            )
        return StoreResult(existing, already_stored=True, uploaded=False, warnings=tuple(warnings))


def check_lineage(parents: Sequence[str], lineage_type: str | None) -> None:
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


def check_metrics(metrics: Mapping[str, float] | None) -> dict[str, float] | None:
    if not metrics:
        return None
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        number_like = isinstance(value, int | float) and not isinstance(value, bool)
        if not number_like or not math.isfinite(value):
            raise UsageError(f"metric '{key}' must be a finite number, not {value!r}.")
        clean[str(key)] = value
    return clean


def _folder_warnings(folder: FolderModel | None) -> list[str]:
    """What a transformers folder will need at serving time, said at store."""
    if folder is None or folder.format != TRANSFORMERS:
        return []
    warnings = []
    if folder.task is None:
        warnings.append(
            f"no built-in task serves {folder.architecture or 'this architecture'}: serve it "
            "with a handler, or store it with --task"
        )
    if folder.remote_code:
        warnings.append(
            "config.json maps its classes to code in the folder (auto_map): the model server "
            "runs that code only with NEXUS_TRUST_REMOTE_CODE=1"
        )
    return warnings
