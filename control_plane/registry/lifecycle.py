"""Stages, approval and history: how a version moves through its life.

Each model has at most one version in `staging` and one in `production`; a
version can be `archived`. New versions start `pending_review`; `approve` and
`reject` decide (with a key, as a signed statement too). Every change (stored,
stage, status, latest, alias, version number, deleted, signature, signed
approval) is appended to the entry's `history` with who (Git's user), when
(UTC, to the microsecond) and `seq`: one more than the highest `seq` in
the file. The history is the registry's own record: merges replay it (see
`metadata/merge.py`), so every change of state must be recorded here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from control_plane.core.errors import ConflictError, UsageError
from control_plane.metadata import MetadataDocument, ModelEntry, parse_timestamp
from control_plane.metadata.entry import ARCHIVED as ARCHIVED
from control_plane.metadata.entry import PRODUCTION as PRODUCTION
from control_plane.metadata.entry import STAGES as STAGES
from control_plane.metadata.entry import STAGING as STAGING

STAGE_VALUES = (STAGING, PRODUCTION, ARCHIVED)

PENDING_REVIEW = "pending_review"
APPROVED = "approved"
REJECTED = "rejected"
STATUSES = (PENDING_REVIEW, APPROVED, REJECTED)

LINEAGE_TYPES = ("fine_tune", "distillation", "merge")


def now() -> str:
    """A version's `timestamp`: whole seconds, as the seed wrote them."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def event_time() -> str:
    """An event's `when`: microseconds, so events of two branches order by time."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Recorder:
    """Appends history events to one document's entries, numbering them as it goes.

    One per write: the next `seq` is found once (a scan of the file's events) and
    then counted up, so a write that changes many entries stays one pass.
    """

    def __init__(self, document: MetadataDocument, who: str | None) -> None:
        self.who = who
        self.recorded: list[tuple[ModelEntry, dict[str, Any]]] = []  # this write's events
        self._next = 1 + max(
            (
                event["seq"]
                for entry in (*document.entries, *document.deleted)  # tombstones count too
                for event in entry.history or ()
                if isinstance(event, dict) and type(event.get("seq")) is int
            ),
            default=0,
        )

    def record(
        self, entry: ModelEntry, what: str, old: Any, new: Any, *, reason: str | None = None
    ) -> None:
        """Append one change to the entry's history."""
        event: dict[str, Any] = {
            "what": what,
            "from": old,
            "to": new,
            "who": self.who,
            "when": event_time(),
            "seq": self._next,
        }
        if reason is not None:
            event["reason"] = reason
        self._next += 1
        entry.history = [*(entry.history or []), event]
        self.recorded.append((entry, event))


def event_order(event: dict[str, Any], position: int) -> tuple[Any, ...]:
    """Sort key: by time, then `seq` (which orders events within one second of older
    files), then file position. Events of two merged branches interleave by time."""
    seq = event.get("seq")
    return (parse_timestamp(event.get("when")), seq if type(seq) is int else 0, position)


def set_latest(document: MetadataDocument, chosen: ModelEntry, recorder: Recorder) -> None:
    """Make `chosen` the one latest version of its model, recording every flip."""
    for entry in document.versions(chosen.model_name):
        want = entry is chosen
        if entry.is_latest != want:
            recorder.record(entry, "latest", entry.is_latest, want)
            entry.is_latest = want


def set_stage(entry: ModelEntry, stage: str | None, recorder: Recorder) -> None:
    if entry.stage != stage:
        recorder.record(entry, "stage", entry.stage, stage)
        entry.stage = stage


def set_status(
    entry: ModelEntry, status: str, recorder: Recorder, reason: str | None = None
) -> None:
    if status not in STATUSES:
        raise UsageError(f"status must be one of {', '.join(STATUSES)}, not '{status}'.")
    if entry.status == status and entry.status_reason == reason:
        return
    recorder.record(entry, "status", entry.status, status, reason=reason)
    entry.status = status
    entry.status_reason = reason


def set_signature(entry: ModelEntry, record: dict[str, Any], recorder: Recorder) -> None:
    """Record a new signature (its bundle is already in the store)."""
    old = (entry.signature or {}).get("signer")
    recorder.record(entry, "signature", old, record["signer"], reason=f"key {record['key'][:12]}")
    entry.signature = record


def set_approval(entry: ModelEntry, record: dict[str, Any], recorder: Recorder) -> None:
    """Record a signed approval or rejection (its statement is already in the store)."""
    old = (entry.approval or {}).get("decision")
    recorder.record(
        entry, "signed_approval", old, record["decision"], reason=f"signed by {record['signer']}"
    )
    entry.approval = record


def promote(
    document: MetadataDocument,
    entry: ModelEntry,
    stage: str,
    *,
    archive_previous: bool,
    require_approval: bool,
    recorder: Recorder,
) -> ModelEntry | None:
    """Move `stage` to `entry`; return the version that held it before, if any."""
    if stage not in STAGES:
        raise UsageError(f"--stage must be staging or production, not '{stage}'.")
    if stage == PRODUCTION and require_approval and entry.status != APPROVED:
        raise ConflictError(
            f"{entry.label} is {entry.status or 'not reviewed'}; require_approval is on, so "
            "only approved versions go to production.",
            hint=f"run 'nexus approve {entry.short_hash} {entry.model_name}' first",
        )
    previous = next(
        (e for e in document.versions(entry.model_name) if e.stage == stage and e is not entry),
        None,
    )
    if previous is not None:
        set_stage(previous, ARCHIVED if archive_previous else None, recorder)
    set_stage(entry, stage, recorder)
    return previous


def latest_of(document: MetadataDocument, model_name: str) -> ModelEntry | None:
    return next((e for e in document.versions(model_name) if e.is_latest), None)


def set_alias(
    document: MetadataDocument, entry: ModelEntry, alias: str, recorder: Recorder
) -> ModelEntry | None:
    """Give `alias` to `entry` (unique per model); return the version that had it."""
    previous = next(
        (e for e in document.versions(entry.model_name) if alias in (e.aliases or ())), None
    )
    if previous is entry:
        return entry
    if previous is not None:
        remove_alias(previous, alias, recorder)
    recorder.record(entry, "alias", None, alias)
    entry.aliases = sorted({*(entry.aliases or ()), alias})
    return previous


def remove_alias(entry: ModelEntry, alias: str, recorder: Recorder) -> None:
    recorder.record(entry, "alias", alias, None)
    entry.aliases = [a for a in entry.aliases or () if a != alias] or None


def add_version(document: MetadataDocument, entry: ModelEntry, recorder: Recorder) -> None:
    """Number a new version, record its storing, and make it the latest."""
    entry.version = document.next_version(entry.model_name)
    recorder.record(entry, "stored", None, entry.version)
    set_status(entry, PENDING_REVIEW, recorder)
    document.entries.append(entry)
    set_latest(document, entry, recorder)


def delete(
    document: MetadataDocument, entry: ModelEntry, recorder: Recorder, *, force: bool
) -> ModelEntry | None:
    """Move a version to the tombstones; return the version that became latest, if any."""
    if entry.stage == PRODUCTION and not force:
        raise ConflictError(
            f"{entry.label} holds production; deleting it would leave nothing to serve.",
            hint="promote another version first, or pass --force",
        )
    successor = None
    if entry.is_latest:
        others = [e for e in document.versions(entry.model_name) if e is not entry]
        if others:
            successor = max(others, key=lambda e: (e.created, e.data.get("version") or 0))
            set_latest(document, successor, recorder)
        else:
            recorder.record(entry, "latest", True, False)
            entry.is_latest = False
    recorder.record(entry, "deleted", entry.version, None)
    entry.stage = None  # a deleted version holds nothing; its history keeps what it held
    entry.aliases = None
    document.entries.remove(entry)
    document.deleted.append(entry)
    return successor
