"""What the API answers and the pages show, read from one metadata document.

Plain dicts and lists (JSON as the API sends it); the pages render the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control_plane.core.errors import NotFoundError
from control_plane.core.hardware import Requirements
from control_plane.metadata import MetadataDocument, ModelEntry
from control_plane.registry.history import model_history
from control_plane.registry.lifecycle import PRODUCTION, STAGING
from control_plane.registry.lineage import lineage_tree
from control_plane.registry.resolve import model_versions

AUDIT_KINDS = ("stage", "status", "latest", "alias", "stored", "deleted", "signature", "approval")


def model_names(document: MetadataDocument) -> list[str]:
    names = {e.model_name for e in document.entries} | {e.model_name for e in document.deleted}
    return sorted(names)


def version_number(entry: ModelEntry) -> int | None:
    number = entry.data.get("version")
    return number if type(number) is int else None


def name_of(entry: ModelEntry) -> str:
    """`resnet v3` (`resnet@9e7b65f` for a version stored before numbers existed)."""
    number = version_number(entry)
    return f"{entry.model_name} v{number}" if number is not None else entry.label


def version_row(entry: ModelEntry) -> dict[str, Any]:
    """One version in a list: who it is, where it stands, its figures."""
    return {
        "model": entry.model_name,
        "version": version_number(entry),
        "commit_hash": entry.commit_hash,
        "short_hash": entry.short_hash,
        "label": name_of(entry),
        "timestamp": entry.timestamp,
        "stage": entry.stage,
        "status": entry.status,
        "is_latest": entry.is_latest,
        "aliases": entry.aliases or [],
        "metrics": entry.metrics or {},
        "tags": entry.tags or {},
        "owner": entry.owner,
        "file_size": entry.file_size,
        "signed": bool(entry.signature),
        "signed_approval": bool(entry.approval),
    }


def model_summary(document: MetadataDocument, name: str) -> dict[str, Any]:
    versions = document.versions(name)
    gone = [e for e in document.deleted if e.model_name == name]

    def holder(stage: str) -> str | None:
        return next((name_of(e) for e in versions if e.stage == stage), None)

    latest = next((name_of(e) for e in versions if e.is_latest), None)
    changes = [
        str(event["when"])
        for entry in (*versions, *gone)
        for event in entry.history or ()
        if isinstance(event, dict) and event.get("when")
    ]
    stamps = [str(e.timestamp) for e in versions if e.timestamp]
    return {
        "name": name,
        "versions": len(versions),
        "latest": latest,
        "staging": holder(STAGING),
        "production": holder(PRODUCTION),
        "last_change": max([*changes, *stamps], default=None),
    }


def models(document: MetadataDocument) -> list[dict[str, Any]]:
    return [model_summary(document, name) for name in model_names(document)]


def version_detail(document: MetadataDocument, entry: ModelEntry) -> dict[str, Any]:
    """Everything `nexus show` shows, the lineage, the version's history, how to load it."""
    history = [
        e
        for e in model_history(document, entry.model_name)
        if e["commit_hash"] == entry.commit_hash
    ]
    number = version_number(entry)
    ref = f"v{number}" if number is not None else entry.short_hash
    return {
        **version_row(entry),
        "entry": entry.to_dict(),
        "lineage": lineage_tree(document, entry),
        "history": history,
        "signature": entry.signature,
        "approval": entry.approval,
        "tensors": entry.tensors,
        "requires": Requirements.from_json(entry.requires).describe(),
        "load_command": f"nexus load {ref} ./{entry.model_name} --model-name {entry.model_name}",
    }


@dataclass(frozen=True)
class AuditQuery:
    model: str | None = None
    kind: str | None = None
    who: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def audit(document: MetadataDocument, query: AuditQuery) -> list[dict[str, Any]]:
    """Every event of every model (or one), oldest first, filtered."""
    if query.model:
        find_model(document, query.model)
    names = [query.model] if query.model else model_names(document)
    events = []
    for name in names:
        for event in model_history(document, name):
            if query.kind and event.get("what") != query.kind:
                continue
            if query.who and query.who.lower() not in str(event.get("who") or "").lower():
                continue
            when = parse_time(event.get("when"))
            if query.since and (when is None or when < query.since):
                continue
            if query.until and (when is None or when > query.until):
                continue
            events.append({"model": name, **event})
    events.sort(key=lambda e: (str(e.get("when") or ""), e.get("seq") or 0))
    return events


def production_timeline(document: MetadataDocument, name: str) -> list[dict[str, Any]]:
    """Which version held production when: spans from each `stage` event that gave a
    version production to the one that took it away (None: it still holds it)."""
    versions = (*document.entries, *document.deleted)
    labels = {e.commit_hash: name_of(e) for e in versions if e.model_name == name}
    spans: list[dict[str, Any]] = []
    open_spans: dict[str, dict[str, Any]] = {}
    for event in model_history(document, name):
        if event.get("what") != "stage":
            continue
        commit = event["commit_hash"]
        if event.get("to") == PRODUCTION:
            span = {
                "commit_hash": commit,
                "label": labels.get(commit, commit[:7]),
                "from": event.get("when"),
                "until": None,
                "by": event.get("who"),
            }
            open_spans[commit] = span
            spans.append(span)
        elif event.get("from") == PRODUCTION and commit in open_spans:
            open_spans.pop(commit)["until"] = event.get("when")
    return spans


def generation(document: MetadataDocument) -> int:
    """The newest history seq: it grows with every change the registry records."""
    return max(
        (
            event["seq"]
            for entry in (*document.entries, *document.deleted)
            for event in entry.history or ()
            if isinstance(event, dict) and type(event.get("seq")) is int
        ),
        default=0,
    )


def find_model(document: MetadataDocument, name: str) -> None:
    """NotFoundError (404) unless the model has versions or deleted ones."""
    if not document.versions(name) and not _deleted(document, name):
        model_versions(document, name)  # raises with the registry's own sentence
        raise NotFoundError(f"no model named '{name}'.")


def _deleted(document: MetadataDocument, name: str) -> bool:
    return any(e.model_name == name for e in document.deleted)


def parse_time(value: Any) -> datetime | None:
    """An event's ISO time, aware (local when naive); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.astimezone()
