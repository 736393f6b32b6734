"""Lineage between versions: `--parent MODEL@REF`, cycle checks, ancestor and descendant trees."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from control_plane.core.errors import UsageError
from control_plane.metadata import MetadataDocument, ModelEntry

Key = tuple[str, str]  # (model_name, commit_hash)


def split_model_ref(text: str) -> tuple[str, str]:
    """`resnet@a1b2c3` -> ("resnet", "a1b2c3"); a bare name means its latest version."""
    model, sep, ref = text.partition("@")
    if not model:
        raise UsageError(f"'{text}' is not MODEL@REF.", hint="e.g. resnet@a1b2c3d or resnet@latest")
    return model, (ref if sep else "latest")


def parent_keys(entry: ModelEntry) -> list[Key]:
    return [(p["model"], p["commit_hash"]) for p in entry.parents or [] if isinstance(p, dict)]


def _index(document: MetadataDocument) -> dict[Key, ModelEntry]:
    return {e.key: e for e in document.entries}


def would_cycle(document: MetadataDocument, child: Key, parents: Iterable[Key]) -> bool:
    """True if `child` is among the ancestors of any of `parents` (or is one of them)."""
    index = _index(document)
    seen: set[Key] = set()
    stack = list(parents)
    while stack:
        current = stack.pop()
        if current == child:
            return True
        if current in seen:
            continue
        seen.add(current)
        entry = index.get(current)
        if entry is not None:
            stack.extend(parent_keys(entry))
    return False


def ancestors(document: MetadataDocument, entry: ModelEntry) -> list[dict[str, Any]]:
    index = _index(document)

    def walk(node: ModelEntry, path: frozenset[Key]) -> list[dict[str, Any]]:
        out = []
        for parent in parent_keys(node):
            found = index.get(parent)
            item: dict[str, Any] = {"model": parent[0], "commit_hash": parent[1]}
            if found is not None and parent not in path:
                item["lineage_type"] = node.lineage_type
                item["parents"] = walk(found, path | {parent})
            else:
                item["missing"] = found is None
            out.append(item)
        return out

    return walk(entry, frozenset({entry.key}))


def descendants(document: MetadataDocument, entry: ModelEntry) -> list[dict[str, Any]]:
    children: dict[Key, list[ModelEntry]] = {}
    for candidate in document.entries:
        for parent in parent_keys(candidate):
            children.setdefault(parent, []).append(candidate)

    def walk(node: Key, path: frozenset[Key]) -> list[dict[str, Any]]:
        return [
            {
                "model": child.model_name,
                "commit_hash": child.commit_hash,
                "lineage_type": child.lineage_type,
                "children": walk(child.key, path | {child.key}) if child.key not in path else [],
            }
            for child in children.get(node, [])
        ]

    return walk(entry.key, frozenset({entry.key}))


def lineage_tree(document: MetadataDocument, entry: ModelEntry) -> dict[str, Any]:
    """A version with its ancestors and descendants, as nested dicts."""
    return {
        "model": entry.model_name,
        "commit_hash": entry.commit_hash,
        "lineage_type": entry.lineage_type,
        "ancestors": ancestors(document, entry),
        "descendants": descendants(document, entry),
    }
