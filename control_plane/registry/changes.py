"""Changes to versions in `.nexus_meta.json`: each resolved and applied under the file's lock,
written atomically, recorded in the version's history, then announced.

The lifecycle's rules (stages, approval, aliases, tombstones) are `lifecycle`'s; this
module applies one of them to the version a ref names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control_plane.core.errors import UsageError
from control_plane.metadata import MetadataDocument, MetadataFile, ModelEntry
from control_plane.registry import lifecycle
from control_plane.registry.announce import Announcer
from control_plane.registry.lineage import split_model_ref
from control_plane.registry.resolve import resolve_ref, validate_alias, validate_model_name
from control_plane.registry.workspace import Workspace

Change = Callable[[MetadataDocument, ModelEntry, lifecycle.Recorder], Any]


@dataclass(frozen=True)
class RollbackResult:
    entry: ModelEntry
    previous: ModelEntry | None


class Changes:
    def __init__(
        self,
        workspace: Workspace,
        metadata: MetadataFile,
        announcer: Announcer,
        who: Callable[[], str | None],
    ) -> None:
        self._workspace = workspace
        self._metadata = metadata
        self._announcer = announcer
        self._who = who

    def apply(self, ref: str, model_name: str, change: Change, kind: str) -> tuple[ModelEntry, Any]:
        """Resolve `ref` of `model_name` under the lock, apply `change`, write atomically,
        then announce it (`kind`: promoted, approved, ...; nothing if nothing changed)."""
        validate_model_name(model_name)
        who = self._who()
        self._workspace.prepare()
        with self._metadata.update() as document:
            entry = resolve_ref(document, ref, model_name)
            recorder = lifecycle.Recorder(document, who)
            outcome = change(document, entry, recorder)
        self._announcer.changed(kind, entry, recorder.recorded)
        return entry, outcome

    def rollback(self, ref: str, model_name: str) -> RollbackResult:
        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            previous = lifecycle.latest_of(document, model_name)
            lifecycle.set_latest(document, entry, rec)
            return previous

        entry, previous = self.apply(ref, model_name, change, "rolled_back")
        return RollbackResult(entry=entry, previous=previous)

    def promote(
        self, ref: str, model_name: str, stage: str, archive_previous: bool, approval: bool
    ) -> tuple[ModelEntry, ModelEntry | None]:
        """`approval`: the settings' require_approval (production only for approved ones)."""

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            return lifecycle.promote(
                document,
                entry,
                stage,
                archive_previous=archive_previous,
                require_approval=approval,
                recorder=rec,
            )

        return self.apply(ref, model_name, change, "promoted")

    def archive(self, ref: str, model_name: str) -> ModelEntry:
        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            lifecycle.set_stage(entry, lifecycle.ARCHIVED, rec)

        return self.apply(ref, model_name, change, "archived")[0]

    def decide(
        self,
        ref: str,
        model_name: str,
        status: str,
        reason: str | None,
        sign: Callable[[ModelEntry], dict[str, Any]] | None,
    ) -> ModelEntry:
        """Approve or reject; `sign` (None: unsigned) makes the signed statement's record,
        before the lock, for the version the ref names now."""
        record = None
        if sign is not None:
            entry = resolve_ref(self._metadata.read(), ref, model_name)
            record, ref = sign(entry), entry.commit_hash

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            lifecycle.set_status(entry, status, rec, reason)
            if record is not None:
                lifecycle.set_approval(entry, record, rec)

        kind = "approved" if status == lifecycle.APPROVED else "rejected"
        return self.apply(ref, model_name, change, kind)[0]

    def set_signature(self, entry: ModelEntry, record: dict[str, Any]) -> ModelEntry:
        def change(document: MetadataDocument, found: ModelEntry, rec: lifecycle.Recorder) -> Any:
            lifecycle.set_signature(found, record, rec)

        return self.apply(entry.commit_hash, entry.model_name, change, "signed")[0]

    def set_alias(self, model_ref: str, alias: str) -> tuple[ModelEntry, ModelEntry | None]:
        model, ref = split_model_ref(model_ref)
        validate_alias(alias)

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            return lifecycle.set_alias(document, entry, alias, rec)

        return self.apply(ref, model, change, "alias_set")

    def remove_alias(self, model_name: str, alias: str) -> ModelEntry:
        validate_alias(alias)

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            return lifecycle.remove_alias(entry, alias, rec)

        return self.apply(alias, model_name, change, "alias_removed")[0]

    def delete(self, model_ref: str, *, force: bool) -> tuple[ModelEntry, ModelEntry | None]:
        if "@" not in model_ref:
            raise UsageError(f"delete needs MODEL@REF, not '{model_ref}'.", hint="e.g. my_model@v3")
        model, ref = split_model_ref(model_ref)

        def change(document: MetadataDocument, entry: ModelEntry, rec: lifecycle.Recorder) -> Any:
            return lifecycle.delete(document, entry, rec, force=force)

        return self.apply(ref, model, change, "deleted")
