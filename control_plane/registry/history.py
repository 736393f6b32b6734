"""A model's history: every recorded change to its versions, in the order it happened."""

from __future__ import annotations

from typing import Any

from control_plane.metadata import MetadataDocument
from control_plane.registry.lifecycle import event_order
from control_plane.registry.resolve import model_versions


def model_history(document: MetadataDocument, model_name: str) -> list[dict[str, Any]]:
    """Oldest first, by time then `seq`; deleted versions' events included (their tombstones
    keep them), so a model whose versions are all deleted still has its history."""
    deleted = [e for e in document.deleted if e.model_name == model_name]
    versions = [*document.versions(model_name), *deleted]
    if not versions:
        model_versions(document, model_name)  # the name check and the not-found error
    events = [
        {"commit_hash": entry.commit_hash, **event}
        for entry in versions
        for event in entry.history or []
        if isinstance(event, dict)
    ]
    order = sorted(range(len(events)), key=lambda i: event_order(events[i], i))
    return [events[i] for i in order]
