"""The Python API behind the CLI and the model server: a facade over the registry's parts.

    from control_plane import Registry
    Registry().store("model.pt", "my_model", metrics={"accuracy": 0.92})

Each method delegates: the store pipeline (`store`), bytes (`objects`), names
and refs (`resolve`), stages and approval (`lifecycle`), lineage, history and
queries live in modules of their own.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_plane.core.errors import GitError, StorageError, UsageError
from control_plane.metadata import MetadataDocument, MetadataFile, ModelEntry, listing
from control_plane.registry import gc, lifecycle, query
from control_plane.registry.backends import open_backend
from control_plane.registry.conflicts import ConflictInputs, find_conflict
from control_plane.registry.history import model_history
from control_plane.registry.lineage import lineage_tree, split_model_ref
from control_plane.registry.merge import MergeResult, merge
from control_plane.registry.objects import Objects, ProgressReporter
from control_plane.registry.resolve import (
    model_versions,
    resolve_ref,
    validate_alias,
    validate_model_name,
)
from control_plane.registry.store import StorePipeline, StoreRequest, StoreResult
from control_plane.registry.workspace import Workspace
from control_plane.settings import CONFIG_FILENAME
from control_plane.storage import StorageBackend

if TYPE_CHECKING:
    from control_plane.registry.git import GitRepo
    from control_plane.settings import NexusConfig

Change = Callable[[MetadataDocument, ModelEntry, lifecycle.Recorder], Any]


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
        environ: dict[str, str] | None = None,
    ) -> None:
        self.workspace = Workspace(start)
        self.root = self.workspace.root
        self._config = config
        self._environ = environ
        if config is None and (
            (self.root / CONFIG_FILENAME).is_file()
            or any(name.startswith("NEXUS_") for name in (environ or os.environ))
        ):
            self._config = self.config  # something to check: a bad one fails every command
        self._backend = backend
        index = self.workspace.index_path
        self.metadata = MetadataFile(
            self.workspace.metadata_path,
            self.workspace.lock_path,
            on_write=lambda data, document: listing.refresh(index, data, document),
        )

    @property
    def config(self) -> NexusConfig:
        """The zero-config default is built on first use, keeping pydantic off `nexus list`."""
        if self._config is None:
            from control_plane.settings import load_config

            self._config = load_config(self.root, self._environ)
        return self._config

    @property
    def backend(self) -> StorageBackend:
        """Created on first use: listing and showing never import a cloud SDK."""
        if self._backend is None:
            self._backend = open_backend(self.config, self.root)
        return self._backend

    @property
    def objects(self) -> Objects:
        return Objects(self.backend, self.workspace)

    # -- queries ---------------------------------------------------------------

    def list(
        self,
        model_name: str | None = None,
        *,
        filters: Sequence[query.Filter] = (),
        sort_metric: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[ModelEntry]:
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
        data: bytes | None = None,
    ) -> builtins.list[listing.Summary]:
        """`list` with only what the table shows, from the listing index (built where writable).
        `data`: the metadata file's bytes, when the caller has read them already."""
        index = self.workspace.index_path if self.workspace.prepare_cache() else None
        if data is None:
            data = self.metadata.read_bytes()
        rows = listing.summaries(self.metadata, index, data)
        return query.select(rows, model_name, filters, sort_metric=sort_metric, limit=limit)

    def resolve(self, ref: str, model_name: str | None = None) -> ModelEntry:
        """`latest`, a stage, a full commit hash or a unique prefix of 4+ hex characters."""
        return resolve_ref(self.metadata.read(), ref, model_name)

    def lineage(self, model_ref: str) -> dict[str, Any]:
        """A version with its ancestors and descendants, as nested dicts."""
        model, ref = split_model_ref(model_ref)
        document = self.metadata.read()
        return lineage_tree(document, resolve_ref(document, ref, model))

    def history(self, model_name: str) -> builtins.list[dict[str, Any]]:
        """Every recorded change to the model's versions, oldest first."""
        return model_history(self.metadata.read(), model_name)

    # -- bytes -----------------------------------------------------------------

    def store(
        self,
        request: StoreRequest | Path | str,
        model_name: str | None = None,
        *,
        progress: ProgressReporter | None = None,
        **fields: Any,
    ) -> StoreResult:
        """Upload a model as the latest version at HEAD: `store(StoreRequest(...))`, or
        `store(path, model_name, **StoreRequest fields)`."""
        if not isinstance(request, StoreRequest):
            if model_name is None:
                raise UsageError("store needs a model name.")
            request = StoreRequest(Path(request), model_name, **fields)
        pipeline = StorePipeline(self.workspace, self.metadata, self.objects, self.config)
        return pipeline.run(request, progress)

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
        return entry, self.objects.load(entry, Path(dest), progress=progress)

    def fetch(
        self, entry: ModelEntry, dest: Path, *, progress: ProgressReporter | None = None
    ) -> Path:
        """Download beside `dest`, verify, rename into place; `dest` untouched on failure."""
        return self.objects.fetch(entry, dest, progress=progress)

    def verify(
        self, ref: str | None = None, model_name: str | None = None
    ) -> builtins.list[tuple[ModelEntry, StorageError | None]]:
        """Download and check stored versions (one, a model's, or all): (entry, failure or None)."""
        if ref is not None:
            entries = [self.resolve(ref, model_name)]
        elif model_name is not None:
            entries = query.newest_first(model_versions(self.metadata.read(), model_name))
        else:
            entries = self.list()
        return self.objects.verify(entries)

    # -- lifecycle -------------------------------------------------------------

    def rollback(self, ref: str, model_name: str) -> RollbackResult:
        """Make an existing version the latest; nothing is deleted."""

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            previous = lifecycle.latest_of(document, model_name)
            lifecycle.set_latest(document, entry, rec)
            return previous

        entry, previous = self._change(ref, model_name, change)
        return RollbackResult(entry=entry, previous=previous)

    def promote(
        self, ref: str, model_name: str, stage: str, *, archive_previous: bool = False
    ) -> tuple[ModelEntry, ModelEntry | None]:
        """Give `stage` (staging or production) to a version; return it and the one before."""
        return self._change(
            ref,
            model_name,
            lambda document, entry, rec: lifecycle.promote(
                document,
                entry,
                stage,
                archive_previous=archive_previous,
                require_approval=self.config.require_approval,
                recorder=rec,
            ),
        )

    def archive(self, ref: str, model_name: str) -> ModelEntry:
        return self._change(
            ref, model_name, lambda d, e, rec: lifecycle.set_stage(e, lifecycle.ARCHIVED, rec)
        )[0]

    def approve(self, ref: str, model_name: str) -> ModelEntry:
        return self._change(
            ref, model_name, lambda d, e, rec: lifecycle.set_status(e, lifecycle.APPROVED, rec)
        )[0]

    def reject(self, ref: str, model_name: str, reason: str) -> ModelEntry:
        if not reason.strip():
            raise UsageError("a rejection needs a --reason.")
        return self._change(
            ref,
            model_name,
            lambda d, e, rec: lifecycle.set_status(e, lifecycle.REJECTED, rec, reason.strip()),
        )[0]

    def set_alias(self, model_ref: str, alias: str) -> tuple[ModelEntry, ModelEntry | None]:
        """Give `alias` to MODEL@REF; return the version and the one that had the alias."""
        model, ref = split_model_ref(model_ref)
        validate_alias(alias)
        return self._change(
            ref,
            model,
            lambda document, entry, rec: lifecycle.set_alias(document, entry, alias, rec),
        )

    def remove_alias(self, model_name: str, alias: str) -> ModelEntry:
        """Take `alias` away from the version of `model_name` that has it."""
        validate_alias(alias)
        return self._change(
            alias,
            model_name,
            lambda document, entry, rec: lifecycle.remove_alias(entry, alias, rec),
        )[0]

    def delete(
        self, model_ref: str, *, force: bool = False
    ) -> tuple[ModelEntry, ModelEntry | None]:
        """Remove MODEL@REF from the metadata (a tombstone keeps its history); its bytes stay
        until `gc`. Returns the version and the one that became latest, if any."""
        if "@" not in model_ref:
            raise UsageError(f"delete needs MODEL@REF, not '{model_ref}'.", hint="e.g. my_model@v3")
        model, ref = split_model_ref(model_ref)
        return self._change(
            ref,
            model,
            lambda document, entry, rec: lifecycle.delete(document, entry, rec, force=force),
        )

    # -- team use: merges, garbage collection ------------------------------------

    def init(self) -> None:
        """Set this clone up: `.nexus/` ignored, the merge driver declared and defined."""
        self.workspace.git().head_commit()  # a clear error outside a repository
        self.workspace.prepare()

    def resolve_conflicts(self) -> tuple[ConflictInputs, MergeResult] | None:
        """Merge a conflicted (or hand-merged) metadata file by the driver's rules and write
        it; None when there is nothing to resolve."""
        try:
            git: GitRepo | None = self.workspace.git()
        except GitError:
            git = None
        inputs = find_conflict(self.metadata.path, git)
        if inputs is None:
            return None
        result = merge(inputs.base, inputs.ours, inputs.theirs)
        self.workspace.prepare()
        self.metadata.replace(result.document)
        return inputs, result

    def gc_plan(self, grace_s: float) -> gc.GcPlan:
        """What `gc` would delete (nothing is deleted)."""
        return gc.plan(
            self.objects,
            self.workspace.git(),
            self.metadata.path,
            self.config.prefix or "",
            grace_s,
        )

    def gc_collect(self, plan: gc.GcPlan) -> gc.GcOutcome:
        return gc.collect(self.objects, plan)

    def _change(self, ref: str, model_name: str, change: Change) -> tuple[ModelEntry, Any]:
        """Resolve `ref` of `model_name` under the lock, apply `change`, write atomically."""
        validate_model_name(model_name)
        who = self.workspace.who()
        self.workspace.prepare()
        with self.metadata.update() as document:
            entry = resolve_ref(document, ref, model_name)
            outcome = change(document, entry, lifecycle.Recorder(document, who))
        return entry, outcome
