"""Stages, approval and history: how a version moves through its life.

Each model has at most one version in `staging` and one in `production`; a
version can be `archived`. New versions start `pending_review`; `approve` and
`reject` decide. Every change of stage, status or latest is appended to the
entry's `history` with who (Git's user) and when.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from control_plane.errors import ConflictError, UsageError
from control_plane.metadata import MetadataDocument, ModelEntry

STAGING = "staging"
PRODUCTION = "production"
ARCHIVED = "archived"
STAGES = (STAGING, PRODUCTION)
STAGE_VALUES = (STAGING, PRODUCTION, ARCHIVED)

PENDING_REVIEW = "pending_review"
APPROVED = "approved"
REJECTED = "rejected"
STATUSES = (PENDING_REVIEW, APPROVED, REJECTED)

LINEAGE_TYPES = ("fine_tune", "distillation", "merge")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record(entry: ModelEntry, what: str, old: Any, new: Any, who: str | None) -> None:
    """Append one change to the entry's history."""
    event = {"what": what, "from": old, "to": new, "who": who, "when": now()}
    entry.history = [*(entry.history or []), event]


def set_latest(document: MetadataDocument, chosen: ModelEntry, who: str | None) -> None:
    """Make `chosen` the one latest version of its model, recording every flip."""
    for entry in document.entries:
        if entry.model_name != chosen.model_name:
            continue
        want = entry is chosen
        if entry.is_latest != want:
            record(entry, "latest", entry.is_latest, want, who)
            entry.is_latest = want


def set_stage(entry: ModelEntry, stage: str | None, who: str | None) -> None:
    if entry.stage != stage:
        record(entry, "stage", entry.stage, stage, who)
        entry.stage = stage


def set_status(entry: ModelEntry, status: str, who: str | None, reason: str | None = None) -> None:
    if status not in STATUSES:
        raise UsageError(f"status must be one of {', '.join(STATUSES)}, not '{status}'.")
    if entry.status == status and entry.status_reason == reason:
        return
    record(entry, "status", entry.status, status, who)
    entry.status = status
    entry.status_reason = reason


def promote(
    document: MetadataDocument,
    entry: ModelEntry,
    stage: str,
    *,
    archive_previous: bool,
    require_approval: bool,
    who: str | None,
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
        (
            e
            for e in document.entries
            if e.model_name == entry.model_name and e.stage == stage and e is not entry
        ),
        None,
    )
    if previous is not None:
        set_stage(previous, ARCHIVED if archive_previous else None, who)
    set_stage(entry, stage, who)
    return previous
