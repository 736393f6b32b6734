"""Merging two branches' `.nexus_meta.json`: never a conflict, nothing lost.

A version is identified by (model, commit). The merge keeps every version
either side has, live or deleted, and each version's history is the union of
both sides' events. The state that events change (latest, stages, status,
aliases, version number, deleted) is then *replayed* from that union in time
order (`when`, then `seq`), so when both branches moved the same thing, the
later event wins, by the events' own record; nothing else is consulted:

- `latest`, a stage, an alias: a claim takes it from whichever version held it.
- A deleted version stays deleted unless the same version is stored again later.
- Two versions with the same number: the earlier-stored keeps it, the other gets
  the next free number, and the renumbering is recorded in its history.

Fields no event changes (metrics, tags, …) merge three ways against the common
ancestor when it is known; if both sides changed one, the side with the later
last event wins. Every tie is broken by content, so the result is the same
whichever branch is merged into which. Replaying a file's own history gives
back its state, so merging is idempotent, and `nexus resolve` (from the index's
conflict stages, or from conflict markers) computes exactly what the driver did.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from control_plane.metadata import MetadataDocument, ModelEntry, parse_timestamp
from control_plane.metadata.entry import STAGES

Key = tuple[str, str]
MERGE_AUTHOR = "nexus merge"
_MISSING = object()


@dataclass
class MergeResult:
    document: MetadataDocument
    notes: list[str] = field(default_factory=list)


def merge(
    base: MetadataDocument | None, ours: MetadataDocument, theirs: MetadataDocument
) -> MergeResult:
    """The merged document (ours' order first) and what the user should hear about."""
    copies: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    live_order: dict[Key, None] = {}
    dead_order: dict[Key, None] = {}
    for side in (ours, theirs):
        for entry in side.entries:
            copies[entry.key].append(entry.data)
            live_order.setdefault(entry.key)
        for entry in side.deleted:
            copies[entry.key].append(entry.data)
            dead_order.setdefault(entry.key)
    base_data = {e.key: e.data for e in (*base.entries, *base.deleted)} if base else {}
    merged = {key: _merge_copies(datas, base_data.get(key)) for key, datas in copies.items()}
    alive = _replay(merged)
    _fix_claims(merged, alive)
    notes = _renumber(merged)
    order = [*live_order, *(k for k in dead_order if k not in live_order)]
    document = MetadataDocument(
        entries=[ModelEntry.wrap(merged[k]) for k in order if alive[k]],
        deleted=[ModelEntry.wrap(merged[k]) for k in order if not alive[k]],
        extra=_merge_dicts(base.extra if base else None, ours.extra, theirs.extra),
    )
    document.number_versions()
    return MergeResult(document, notes)


# -- events ---------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _identity(event: dict[str, Any]) -> bytes:
    """Events are the same event whatever `seq` each branch gave them."""
    return _canonical({k: v for k, v in event.items() if k != "seq"})


def _event_key(event: dict[str, Any]) -> tuple[datetime, int, bytes]:
    seq = event.get("seq")
    return (parse_timestamp(event.get("when")), seq if type(seq) is int else 0, _identity(event))


def _events(history: Any) -> list[dict[str, Any]]:
    return [e for e in history or () if isinstance(e, dict)]


# -- one version: its copies on both sides ----------------------------------------------


def _merge_copies(datas: list[dict[str, Any]], base: dict[str, Any] | None) -> dict[str, Any]:
    """One version's data: history united, other fields merged three ways. A new dict; the
    values it shares with the inputs are never modified (replay replaces, not edits)."""
    history: dict[bytes, dict[str, Any]] = {}
    for data in datas:
        for event in _events(data.get("history")):
            history.setdefault(_identity(event), event)
    events = sorted(history.values(), key=_event_key)
    last_event = [
        max((_event_key(e) for e in _events(d.get("history"))), default=None) for d in datas
    ]
    result: dict[str, Any] = {}
    for name in dict.fromkeys(k for d in datas for k in d):
        if name == "history":
            continue
        values = [d.get(name, _MISSING) for d in datas]
        value = _pick(values, base.get(name, _MISSING) if base else _MISSING, last_event)
        if value is not _MISSING:
            result[name] = value
    result["history"] = events
    return result


def _pick(values: list[Any], base: Any, recency: list[Any]) -> Any:
    """Agreed value; else the one that differs from the ancestor; else the side with the later
    last event; content breaks any tie, so the choice does not depend on the side."""
    distinct = {_canonical_or_missing(v): v for v in values}
    if len(distinct) == 1:
        return values[0]
    changed = {c: v for c, v in distinct.items() if c != _canonical_or_missing(base)}
    if base is not _MISSING and len(changed) == 1:
        return next(iter(changed.values()))
    ranked = sorted(
        zip(values, recency, strict=True),
        key=lambda pair: (pair[1] is not None, pair[1] or (), _canonical_or_missing(pair[0])),
    )
    return ranked[-1][0]


def _canonical_or_missing(value: Any) -> bytes:
    return b"\x00missing" if value is _MISSING else _canonical(value)


def _merge_dicts(
    base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any]
) -> dict[str, Any]:
    """Unknown top-level fields, three ways; a field both changed keeps the larger value by
    content (deterministic whichever way the merge runs)."""
    result: dict[str, Any] = {}
    for name in dict.fromkeys([*ours, *theirs]):
        values = [ours.get(name, _MISSING), theirs.get(name, _MISSING)]
        value = _pick(values, (base or {}).get(name, _MISSING), [None, None])
        if value is not _MISSING:
            result[name] = value
    return result


# -- replaying the united history -------------------------------------------------------


def _initial(data: dict[str, Any], what: str, field_name: str, default: Any) -> Any:
    """A register before its first event: that event's `from` (legacy state before any
    event was recorded); with no events at all, the merged field."""
    first = next((e for e in data["history"] if e.get("what") == what), None)
    if first is None:
        return data.get(field_name, default)
    return first.get("from", default)


def _replay(merged: dict[Key, dict[str, Any]]) -> dict[Key, bool]:
    """Set each version's state by replaying every event in time order; return liveness."""
    for data in merged.values():
        data["is_latest"] = bool(_initial(data, "latest", "is_latest", False))
        data["stage"] = _initial(data, "stage", "stage", None)
        data["status"] = _initial(data, "status", "status", None)
        if any(e.get("what") == "alias" for e in data["history"]):
            data["aliases"] = None
        first_number = next(
            (e for e in data["history"] if e.get("what") in ("stored", "version")), None
        )
        if first_number is not None:
            data["version"] = first_number.get("from")
    alive = dict.fromkeys(merged, True)
    by_model: dict[str, list[Key]] = defaultdict(list)
    for key in merged:
        by_model[key[0]].append(key)
    timeline = sorted(
        ((_event_key(e), key, e) for key, data in merged.items() for e in data["history"]),
        key=lambda item: (item[0], item[1]),
    )
    for _, key, event in timeline:
        _apply(merged, alive, by_model[key[0]], key, event)
    for data in merged.values():
        for name in ("stage", "status", "status_reason", "aliases", "version"):
            if data.get(name) is None:
                data.pop(name, None)
    return alive


def _apply(
    merged: dict[Key, dict[str, Any]],
    alive: dict[Key, bool],
    siblings: list[Key],
    key: Key,
    event: dict[str, Any],
) -> None:
    data, what, new = merged[key], event.get("what"), event.get("to")
    if what == "stored":
        alive[key] = True
        if type(new) is int:
            data["version"] = new
        return
    if what == "deleted":
        alive[key] = False
        data.update(is_latest=False, stage=None, aliases=None)
        return
    if what == "version":
        data["version"] = new
        return
    if not alive[key]:
        return  # a change the other branch made to a version this one deleted
    if what == "latest":
        if new is True:
            for other in siblings:
                merged[other]["is_latest"] = False
        data["is_latest"] = bool(new)
    elif what == "stage":
        if new in STAGES:
            for other in siblings:
                if merged[other].get("stage") == new:
                    merged[other]["stage"] = None
        data["stage"] = new
    elif what == "status":
        data["status"] = new
        data["status_reason"] = event.get("reason")
    elif what == "alias":
        old = event.get("from")
        if new is not None:
            for other in siblings:
                names = merged[other].get("aliases") or []
                if new in names:
                    merged[other]["aliases"] = [a for a in names if a != new] or None
            data["aliases"] = sorted({*(data.get("aliases") or ()), new})
        elif old is not None:
            data["aliases"] = [a for a in data.get("aliases") or () if a != old] or None


# -- what replay cannot decide alone ----------------------------------------------------


def _created(data: dict[str, Any]) -> tuple[Any, ...]:
    """When a version was stored: its timestamp, then its first event, then its commit."""
    events = data["history"]
    first = parse_timestamp(events[0].get("when") if events else None)
    return (parse_timestamp(data.get("timestamp")), first, data["commit_hash"])


def _fix_claims(merged: dict[Key, dict[str, Any]], alive: dict[Key, bool]) -> None:
    """Each model with live versions gets exactly one latest (the newest, if the one that
    claimed it last was deleted); stages and aliases held twice by pre-history files keep
    the newer holder."""
    models: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, data in merged.items():
        if alive[key]:
            models[key[0]].append(data)
    for datas in models.values():
        newest_first = sorted(datas, key=_created, reverse=True)
        latest = [d for d in newest_first if d.get("is_latest")] or newest_first[:1]
        for data in datas:
            data["is_latest"] = data is latest[0]
        for stage in STAGES:
            for data in [d for d in newest_first if d.get("stage") == stage][1:]:
                data.pop("stage")
        seen: set[str] = set()
        for data in newest_first:
            names = [a for a in data.get("aliases") or () if a not in seen]
            seen.update(names)
            if names:
                data["aliases"] = names
            else:
                data.pop("aliases", None)


def _renumber(merged: dict[Key, dict[str, Any]]) -> list[str]:
    """Two versions of a model with one number (each branch made a v3): the earlier keeps
    it, the later gets the model's next free number; recorded, and said."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    highest: dict[str, int] = defaultdict(int)
    for (model, _), data in merged.items():
        number = data.get("version")
        if type(number) is int:
            groups[(model, number)].append(data)
            highest[model] = max(highest[model], number)
    clashes = sorted((k, v) for k, v in groups.items() if len(v) > 1)
    if not clashes:
        return []
    all_events = [e for data in merged.values() for e in data["history"]]
    when = max((e.get("when") for e in all_events), key=parse_timestamp, default=None)
    seq = 1 + max((e["seq"] for e in all_events if type(e.get("seq")) is int), default=0)
    notes = []
    for (model, number), datas in clashes:
        keeper, *later = sorted(datas, key=_created)
        for data in later:
            highest[model] += 1
            data["version"] = highest[model]
            data["history"].append(
                {
                    "what": "version",
                    "from": number,
                    "to": highest[model],
                    "who": MERGE_AUTHOR,
                    "when": when,
                    "seq": seq,
                    "reason": f"both branches made v{number}; "
                    f"{keeper['commit_hash'][:7]} was stored first",
                }
            )
            seq += 1
            notes.append(
                f"{model} v{number} ({data['commit_hash'][:7]}) is now v{highest[model]}: both "
                f"branches made a v{number}, and {keeper['commit_hash'][:7]} was stored first."
            )
    return notes
