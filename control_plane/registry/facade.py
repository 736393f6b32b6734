"""The Python API behind the CLI and the model server: a facade over the registry's parts.

    from control_plane import Registry
    Registry().store("model.pt", "my_model", metrics={"accuracy": 0.92})

Each method delegates: the store pipeline (`store`), bytes (`objects`), names
and refs (`resolve`), changes to versions (`changes`, by `lifecycle`'s rules),
trust (`trusting`), events (`announce`), lineage, history, queries, merges and
gc live in modules of their own.
"""

from __future__ import annotations

import builtins
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_plane.core.errors import UsageError
from control_plane.metadata import MetadataFile, ModelEntry, listing
from control_plane.registry import gc, lifecycle, query
from control_plane.registry.announce import Announcer
from control_plane.registry.backends import open_backend
from control_plane.registry.changes import Changes, RollbackResult
from control_plane.registry.conflicts import ConflictInputs, resolve_conflicted
from control_plane.registry.events import EventOutlet
from control_plane.registry.history import model_history
from control_plane.registry.lineage import lineage_tree, split_model_ref
from control_plane.registry.merge import MergeResult
from control_plane.registry.objects import Objects, ProgressReporter
from control_plane.registry.resolve import resolve_ref
from control_plane.registry.store import StorePipeline, StoreRequest, StoreResult
from control_plane.registry.trusting import RegistryTrust, VerifyResult
from control_plane.registry.workspace import Workspace
from control_plane.settings import CONFIG_FILENAME
from control_plane.storage import StorageBackend

if TYPE_CHECKING:
    from control_plane.registry.trust.check import TrustReport
    from control_plane.registry.trust.versions import VersionTrust
    from control_plane.settings import NexusConfig

__all__ = ["Registry", "RollbackResult", "VerifyResult"]


def _configured(root: Path, environ: dict[str, str] | None) -> bool:
    """A `.nexusrc` or a NEXUS_* variable is there to be checked."""
    names = environ or os.environ
    return (root / CONFIG_FILENAME).is_file() or any(n.startswith("NEXUS_") for n in names)


class Registry:
    """Model versions linked to Git commits, with bytes in a storage backend."""

    def __init__(
        self,
        start: Path | str | None = None,
        *,
        config: NexusConfig | None = None,
        backend: StorageBackend | None = None,
        environ: dict[str, str] | None = None,
        who: str | None = None,
        hold_events: bool = False,
    ) -> None:
        """`who`: whom history names (default: Git's user); `hold_events`: publish the events
        only at `publish_held`, for a caller whose change is done once it is committed."""
        self.workspace = Workspace(start)
        self._who = who
        self.root = self.workspace.root
        self._config = config
        self._environ = environ
        if config is None and _configured(self.root, environ):
            self._config = self.config  # something to check: a bad one fails every command
        self._backend = backend
        index = self.workspace.index_path
        self.metadata = MetadataFile(
            self.workspace.metadata_path,
            self.workspace.lock_path,
            on_write=lambda data, document: listing.refresh(index, data, document),
        )
        self.announcer = Announcer(
            lambda: self.config, self.root, self.workspace.workdir, environ, hold=hold_events
        )
        self.changes = Changes(self.workspace, self.metadata, self.announcer, self.who)
        self.trusting = RegistryTrust(
            lambda: self.config, self.root, lambda: self.objects, self.who
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

    def who(self) -> str | None:
        return self._who if self._who is not None else self.workspace.who()

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
        request = StoreRequest.of(request, model_name, fields)
        signer = self.trusting.signer(request)
        pipeline = StorePipeline(self.workspace, self.metadata, self.objects, self.config, signer)
        result = pipeline.run(request, progress)
        self.announcer.changed("stored", result.entry, result.recorded)  # none if already there
        return result

    def load(
        self,
        ref: str,
        dest: Path | str,
        *,
        model_name: str | None = None,
        progress: ProgressReporter | None = None,
    ) -> tuple[ModelEntry, Path]:
        """Download a version to `dest` (a file, or a directory to keep the stored name), once
        its signature and approval hold (the policy's, checked before any byte moves)."""
        entry = self.resolve(ref, model_name)
        self.check_trust(entry)
        return entry, self.objects.load(entry, Path(dest), progress=progress)

    def verify(
        self, ref: str | None = None, model_name: str | None = None
    ) -> builtins.list[VerifyResult]:
        """Download and check stored versions (one, a model's, or all): bytes, then the
        signature and approval under the policy."""
        entries = query.chosen(self.metadata.read(), ref, model_name)
        return self.trusting.verified(self.objects.verify(entries))

    # -- trust -----------------------------------------------------------------

    @property
    def trust(self) -> VersionTrust:
        """Signing and checking under this registry's policy (model-signing loads here)."""
        return self.trusting.versions

    def check_trust(self, entry: ModelEntry) -> TrustReport | None:
        """Raise the TrustError that keeps `entry` from loading (see `RegistryTrust.check`)."""
        return self.trusting.check(entry)

    def sign(self, model_ref: str, *, key: Path | None = None) -> tuple[ModelEntry, bytes]:
        """Sign MODEL@REF (its recorded sha256s: nothing is downloaded); the bundle is stored
        beside the object and recorded in the entry. Returns the entry and the bundle."""
        model, ref = split_model_ref(model_ref)
        entry = self.resolve(ref, model)
        record, data = self.trusting.sign(entry, key)
        return self.changes.set_signature(entry, record), data

    # -- lifecycle -------------------------------------------------------------

    def rollback(self, ref: str, model_name: str) -> RollbackResult:
        """Make an existing version the latest; nothing is deleted."""
        return self.changes.rollback(ref, model_name)

    def promote(
        self, ref: str, model_name: str, stage: str, *, archive_previous: bool = False
    ) -> tuple[ModelEntry, ModelEntry | None]:
        """Give `stage` (staging or production) to a version; return it and the one before."""
        approval = self.config.require_approval
        return self.changes.promote(ref, model_name, stage, archive_previous, approval)

    def archive(self, ref: str, model_name: str) -> ModelEntry:
        return self.changes.archive(ref, model_name)

    def approve(self, ref: str, model_name: str, *, key: Path | None = None) -> ModelEntry:
        """Approve a version; signed (a statement in the store) with `key` or `signing_key`."""
        return self._decide(ref, model_name, lifecycle.APPROVED, None, key)

    def reject(
        self, ref: str, model_name: str, reason: str, *, key: Path | None = None
    ) -> ModelEntry:
        if not reason.strip():
            raise UsageError("a rejection needs a --reason.")
        return self._decide(ref, model_name, lifecycle.REJECTED, reason.strip(), key)

    def _decide(
        self, ref: str, model_name: str, status: str, reason: str | None, key: Path | None
    ) -> ModelEntry:
        sign = functools.partial(self.trusting.approval, key=key, status=status, reason=reason)
        signed = sign if self.trusting.signs(key) else None
        return self.changes.decide(ref, model_name, status, reason, signed)

    def set_alias(self, model_ref: str, alias: str) -> tuple[ModelEntry, ModelEntry | None]:
        """Give `alias` to MODEL@REF; return the version and the one that had the alias."""
        return self.changes.set_alias(model_ref, alias)

    def remove_alias(self, model_name: str, alias: str) -> ModelEntry:
        """Take `alias` away from the version of `model_name` that has it."""
        return self.changes.remove_alias(model_name, alias)

    def delete(
        self, model_ref: str, *, force: bool = False
    ) -> tuple[ModelEntry, ModelEntry | None]:
        """Remove MODEL@REF from the metadata (a tombstone keeps its history); its bytes stay
        until `gc`. Returns the version and the one that became latest, if any."""
        return self.changes.delete(model_ref, force=force)

    # -- team use: merges, garbage collection ------------------------------------

    def init(self) -> None:
        """Set this clone up: `.nexus/` ignored, the merge driver declared and defined."""
        self.workspace.git().head_commit()  # a clear error outside a repository
        self.workspace.prepare()

    def resolve_conflicts(self) -> tuple[ConflictInputs, MergeResult] | None:
        """Merge a conflicted metadata file by the driver's rules; None: nothing to resolve."""
        return resolve_conflicted(self.metadata, self.workspace.git, self.workspace.prepare)

    def gc_plan(self, grace_s: float) -> gc.GcPlan:
        """What `gc` would delete (nothing is deleted)."""
        prefix = self.config.prefix or ""
        return gc.plan(self.objects, self.workspace.git(), self.metadata.path, prefix, grace_s)

    def gc_collect(self, plan: gc.GcPlan) -> gc.GcOutcome:
        outcome = gc.collect(self.objects, plan)
        self.announcer.collected(outcome, self.who())
        return outcome

    # -- events ------------------------------------------------------------------

    @property
    def events(self) -> EventOutlet:
        """Where this workspace's events go (`events_file`, `webhook_url`, the outbox)."""
        return self.announcer.outlet

    def publish_held(self) -> None:
        """Publish the events held so far (see `hold_events`)."""
        self.announcer.publish_held()
