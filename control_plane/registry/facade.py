"""The Python API behind the CLI and the model server: a facade over the registry's parts.

    from control_plane import Registry
    Registry().store("model.pt", "my_model", metrics={"accuracy": 0.92})

Each method delegates: the store pipeline (`store`), bytes (`objects`), names
and refs (`resolve`), stages and approval (`lifecycle`), lineage, history and
queries live in modules of their own.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_plane.core.errors import (
    ConfigError,
    GitError,
    NexusError,
    TrustError,
    UsageError,
)
from control_plane.metadata import MetadataDocument, MetadataFile, ModelEntry, listing
from control_plane.registry import gc, lifecycle, query
from control_plane.registry.backends import open_backend
from control_plane.registry.conflicts import ConflictInputs, find_conflict
from control_plane.registry.events import Event, EventOutlet, cloud_event, version_event
from control_plane.registry.git import own_files_to_commit
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
from control_plane.registry.store import Signer, StorePipeline, StoreRequest, StoreResult
from control_plane.registry.workspace import Workspace
from control_plane.settings import CONFIG_FILENAME
from control_plane.storage import StorageBackend

if TYPE_CHECKING:
    from control_plane.registry.git import GitRepo
    from control_plane.registry.trust.check import TrustReport, Verdict
    from control_plane.registry.trust.keys import SigningKey
    from control_plane.registry.trust.versions import VersionTrust
    from control_plane.settings import NexusConfig

Change = Callable[[MetadataDocument, ModelEntry, lifecycle.Recorder], Any]


@dataclass(frozen=True)
class VerifyResult:
    """One version checked: its bytes and, where it has them, its signature and approval."""

    entry: ModelEntry
    error: NexusError | None
    trust: TrustReport | None = None


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
        who: str | None = None,
        hold_events: bool = False,
    ) -> None:
        """`who`: the person history events name (default: Git's user in the workspace); a
        server acting for its users names each one. `hold_events`: keep each change's event
        in `held_events` instead of publishing it, for a caller whose change is done only
        once it is committed (`publish_held`)."""
        self.workspace = Workspace(start)
        self._who = who
        self.held_events: list[Event] | None = [] if hold_events else None
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
        if not isinstance(request, StoreRequest):
            if model_name is None:
                raise UsageError("store needs a model name.")
            request = StoreRequest(Path(request), model_name, **fields)
        pipeline = StorePipeline(
            self.workspace, self.metadata, self.objects, self.config, self._signer(request)
        )
        result = pipeline.run(request, progress)
        self._emit("stored", result.entry, result.recorded)  # none when already stored
        return result

    def _signer(self, request: StoreRequest) -> Signer | None:
        """What signs a new version: with `--sign`, `--key` or `signing_key` set; the key is
        read now, so a bad one fails before any byte is hashed or uploaded."""
        if not (request.sign or request.signing_key or self.config.signing_key):
            return None
        from control_plane.registry.trust.bundles import Content

        key, trust, who = self.signing_key(request.signing_key), self.trust, self.workspace.who()
        return lambda entry, files: trust.sign(entry, Content(files), key, who)[0]

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

    def fetch(
        self, entry: ModelEntry, dest: Path, *, progress: ProgressReporter | None = None
    ) -> Path:
        """Download beside `dest`, verify, rename into place; `dest` untouched on failure."""
        return self.objects.fetch(entry, dest, progress=progress)

    def verify(
        self, ref: str | None = None, model_name: str | None = None
    ) -> builtins.list[VerifyResult]:
        """Download and check stored versions (one, a model's, or all): bytes, then the
        signature and approval under the policy."""
        if ref is not None:
            entries = [self.resolve(ref, model_name)]
        elif model_name is not None:
            entries = query.newest_first(model_versions(self.metadata.read(), model_name))
        else:
            entries = self.list()
        results = []
        for entry, error in self.objects.verify(entries):
            report: TrustReport | None = None
            failure: NexusError | None = error
            if error is None and self._trust_applies(entry):
                report = self.trust.report(entry)  # once: the verdicts and the refusal
                try:
                    self.trust.enforce(entry, report)
                except TrustError as exc:
                    failure = exc
            results.append(VerifyResult(entry, failure, report))
        return results

    # -- trust -----------------------------------------------------------------

    @functools.cached_property
    def trust(self) -> VersionTrust:
        """Signing and checking under this registry's policy (model-signing loads here)."""
        try:
            from control_plane.registry.trust.check import TrustPolicy
            from control_plane.registry.trust.versions import VersionTrust
        except ImportError as exc:
            raise ConfigError(
                f"signatures need the model-signing package ({exc.name} is missing).",
                hint="pip install 'nexusml[sign]'",
            ) from None
        config = self.config
        keys = config.repo_path(config.trusted_keys, self.root) if config.trusted_keys else None
        policy = TrustPolicy.build(
            keys,
            require_signature=config.require_signature,
            require_signed_approval=config.require_signed_approval,
        )
        return VersionTrust(self.objects, policy, config.prefix)

    def check_trust(self, entry: ModelEntry) -> TrustReport | None:
        """Raise the TrustError that keeps `entry` from loading; None when the version has
        nothing signed and nothing is required (no bundle is read, model-signing not loaded)."""
        return self.trust.enforce(entry) if self._trust_applies(entry) else None

    def _trust_applies(self, entry: ModelEntry) -> bool:
        """The version has something signed, or the policy requires it to."""
        config = self.config
        return bool(
            entry.signature
            or entry.approval
            or config.require_signature
            or config.require_signed_approval
        )

    def trust_report(self, entry: ModelEntry) -> TrustReport | None:
        """The verdicts on what the version has signed (None: nothing), without the policy."""
        if not (entry.signature or entry.approval):
            return None
        return self.trust.report(entry)

    def signing_key(self, path: Path | None) -> SigningKey:
        """The key named by `--key`, else `signing_key` in the settings."""
        from control_plane.registry.trust.keys import SigningKey

        chosen = path or (
            self.config.repo_path(self.config.signing_key, self.root)
            if self.config.signing_key
            else None
        )
        if chosen is None:
            raise UsageError(
                "signing needs a key: pass --key PATH or set signing_key in .nexusrc.",
                hint="make one with 'nexus keygen ~/.nexus/me.key'",
            )
        return SigningKey.read(chosen)

    def sign(self, model_ref: str, *, key: Path | None = None) -> tuple[ModelEntry, bytes]:
        """Sign MODEL@REF (its recorded sha256s: nothing is downloaded); the bundle is stored
        beside the object and recorded in the entry. Returns the entry and the bundle."""
        model, ref = split_model_ref(model_ref)
        signing_key = self.signing_key(key)
        trust = self.trust
        entry = self.resolve(ref, model)
        record, data = trust.sign(entry, trust.content(entry), signing_key, self.workspace.who())

        def change(document: MetadataDocument, found: ModelEntry, rec: lifecycle.Recorder) -> Any:
            lifecycle.set_signature(found, record, rec)

        return self._change(entry.commit_hash, model, change, "signed")[0], data

    def check_signature_file(self, model_ref: str, data: bytes) -> tuple[ModelEntry, Verdict]:
        """Check a bundle made elsewhere (say `model_signing sign`) against MODEL@REF."""
        model, ref = split_model_ref(model_ref)
        entry = self.resolve(ref, model)
        return entry, self.trust.check_bundle(entry, data)

    # -- lifecycle -------------------------------------------------------------

    def rollback(self, ref: str, model_name: str) -> RollbackResult:
        """Make an existing version the latest; nothing is deleted."""

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            previous = lifecycle.latest_of(document, model_name)
            lifecycle.set_latest(document, entry, rec)
            return previous

        entry, previous = self._change(ref, model_name, change, "rolled_back")
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
            "promoted",
        )

    def archive(self, ref: str, model_name: str) -> ModelEntry:
        return self._change(
            ref,
            model_name,
            lambda d, e, rec: lifecycle.set_stage(e, lifecycle.ARCHIVED, rec),
            "archived",
        )[0]

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
        record = None
        if key is not None or self.config.signing_key:
            signing_key = self.signing_key(key)
            entry = self.resolve(ref, model_name)
            when = lifecycle.event_time()
            who = self.who()
            record = self.trust.approve(entry, signing_key, status, who, when, reason)
            ref = entry.commit_hash

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            lifecycle.set_status(entry, status, rec, reason)
            if record is not None:
                lifecycle.set_approval(entry, record, rec)

        kind = "approved" if status == lifecycle.APPROVED else "rejected"
        return self._change(ref, model_name, change, kind)[0]

    def set_alias(self, model_ref: str, alias: str) -> tuple[ModelEntry, ModelEntry | None]:
        """Give `alias` to MODEL@REF; return the version and the one that had the alias."""
        model, ref = split_model_ref(model_ref)
        validate_alias(alias)
        return self._change(
            ref,
            model,
            lambda document, entry, rec: lifecycle.set_alias(document, entry, alias, rec),
            "alias_set",
        )

    def remove_alias(self, model_name: str, alias: str) -> ModelEntry:
        """Take `alias` away from the version of `model_name` that has it."""
        validate_alias(alias)
        return self._change(
            alias,
            model_name,
            lambda document, entry, rec: lifecycle.remove_alias(entry, alias, rec),
            "alias_removed",
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
            "deleted",
        )

    # -- team use: merges, garbage collection ------------------------------------

    def files_to_commit(self) -> builtins.list[str]:
        """The registry's files (metadata, .gitattributes, .gitignore) Git has not committed."""
        return own_files_to_commit(self.root)

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
        outcome = gc.collect(self.objects, plan)
        if outcome.deleted and self.events.active:
            keys = sorted(info.key for info in outcome.deleted)
            data = {"who": self.who(), "deleted": keys, "bytes": outcome.deleted_bytes}
            identity = hashlib.sha256("\n".join(keys).encode()).hexdigest()
            when = lifecycle.event_time()
            self.events.publish(
                [cloud_event("store.collected", self.event_source, "store", when, data, identity)]
            )
        return outcome

    def _change(
        self, ref: str, model_name: str, change: Change, kind: str
    ) -> tuple[ModelEntry, Any]:
        """Resolve `ref` of `model_name` under the lock, apply `change`, write atomically,
        then emit the change's event (`kind`: promoted, approved, ...; none if nothing
        changed)."""
        validate_model_name(model_name)
        who = self.who()
        self.workspace.prepare()
        with self.metadata.update() as document:
            entry = resolve_ref(document, ref, model_name)
            recorder = lifecycle.Recorder(document, who)
            outcome = change(document, entry, recorder)
        self._emit(kind, entry, recorder.recorded)
        return entry, outcome

    # -- events ------------------------------------------------------------------

    @functools.cached_property
    def events(self) -> EventOutlet:
        """Where this workspace's events go (`events_file`, `webhook_url`, the outbox)."""
        config = self.config
        return EventOutlet(
            events_file=config.repo_path(config.events_file, self.root)
            if config.events_file
            else None,
            webhook_url=config.webhook_url,
            outbox=self.workspace.workdir / "outbox.jsonl",
            environ=self._environ,
        )

    @property
    def event_source(self) -> str:
        return f"/nexusml/{self.root.name}"

    def _emit(
        self, kind: str, entry: ModelEntry, recorded: Sequence[tuple[ModelEntry, dict[str, Any]]]
    ) -> None:
        if not self.events.active:
            return
        event = version_event(kind, entry, recorded, self.event_source)
        if event is None:
            return
        if self.held_events is not None:
            self.held_events.append(event)
        else:
            self.events.publish([event])

    def publish_held(self) -> None:
        """Publish the events held so far (see `hold_events`)."""
        if self.held_events:
            events = list(self.held_events)
            self.held_events.clear()
            self.events.publish(events)
