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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from operator import itemgetter
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
    merged: dict[Key, dict[str, Any]] = {}
    order_keys: dict[Key, list[EventKey]] = {}
    for key, datas in copies.items():
        merged[key], order_keys[key] = _merge_copies(datas, base_data.get(key))
    alive = _replay(merged, order_keys)
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
    copy = dict(event)
    copy.pop("seq", None)
    return _canonical(copy)


EventKey = tuple[str, int, bytes]


def _event_key(event: dict[str, Any], identity: bytes) -> EventKey:
    """Time order: `when` (as a canonical UTC microsecond string, which sorts as time), then
    `seq` (orders events within one second of older files), then content (events of one
    version that both sides recorded; elsewhere `seq` already decides)."""
    when = event.get("when")
    if not (type(when) is str and len(when) == 32 and when.endswith("+00:00")):
        when = parse_timestamp(when).astimezone(UTC).isoformat(timespec="microseconds")
    seq = event.get("seq")
    return (when, seq if type(seq) is int else 0, identity)


def _events(history: Any) -> list[dict[str, Any]]:
    return [e for e in history or () if isinstance(e, dict)]


# -- one version: its copies on both sides ----------------------------------------------


def _merge_copies(
    datas: list[dict[str, Any]], base: dict[str, Any] | None
) -> tuple[dict[str, Any], list[EventKey]]:
    """One version's data (history united, other fields merged three ways) and its events'
    sort keys. A new dict; the values it shares with the inputs are never modified (replay
    replaces, not edits)."""
    if len(datas) == 1:  # a version only one side has (the common case): nothing to unite
        events = _events(datas[0].get("history"))
        # one file's `seq` is unique, so content is never needed to break a tie here
        only = sorted((_event_key(e, b""), i, e) for i, e in enumerate(events))
        single = dict(datas[0])
        single["history"] = [e for _, _, e in only]
        return single, [k for k, _, _ in only]
    keyed: dict[bytes, tuple[EventKey, dict[str, Any]]] = {}
    per_copy: list[list[EventKey]] = []
    for data in datas:
        keys = []
        for event in _events(data.get("history")):
            identity = _identity(event)
            found = keyed.get(identity)
            if found is None:
                found = keyed[identity] = (_event_key(event, identity), event)
            keys.append(found[0])
        per_copy.append(keys)
    ordered = sorted(keyed.values(), key=lambda pair: pair[0])

    def recency() -> list[EventKey | None]:
        return [max(keys, default=None) for keys in per_copy]

    result: dict[str, Any] = {}
    for name in dict.fromkeys(k for d in datas for k in d):
        if name == "history":
            continue
        values = [d.get(name, _MISSING) for d in datas]
        value = _pick(values, base.get(name, _MISSING) if base else _MISSING, recency)
        if value is not _MISSING:
            result[name] = value
    result["history"] = [event for _, event in ordered]
    return result, [key for key, _ in ordered]


def _pick(values: list[Any], base: Any, recency: Callable[[], list[Any]]) -> Any:
    """Agreed value; else the one that differs from the ancestor; else the side with the later
    last event; content breaks any tie, so the choice does not depend on the side."""
    first = values[0]
    if all(v is first or v == first for v in values[1:]):
        return first
    distinct = {_canonical_or_missing(v): v for v in values}
    if len(distinct) == 1:
        return first
    changed = {c: v for c, v in distinct.items() if c != _canonical_or_missing(base)}
    if base is not _MISSING and len(changed) == 1:
        return next(iter(changed.values()))
    ranked = sorted(
        zip(values, recency(), strict=True),
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
        value = _pick(values, (base or {}).get(name, _MISSING), lambda: [None, None])
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


def _replay(
    merged: dict[Key, dict[str, Any]], order_keys: dict[Key, list[EventKey]]
) -> dict[Key, bool]:
    """Set each version's state by replaying every event in time order; return liveness."""
    holders = _Holders()
    for key, data in merged.items():
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
        holders.note(key, data)
    alive = dict.fromkeys(merged, True)
    timeline = sorted(
        (
            (order, key, event)
            for key, data in merged.items()
            for order, event in zip(order_keys[key], data["history"], strict=True)
        ),
        key=itemgetter(0, 1),  # (time order, version): never equal for two events
    )
    for _, key, event in timeline:
        _apply(merged[key], alive, holders, key, event)
    for data in merged.values():
        for name in ("stage", "status", "status_reason", "aliases", "version"):
            if data.get(name) is None:
                data.pop(name, None)
    return alive


class _Holders:
    """Who holds each claim of a model (latest, a stage, an alias), so a claim clears the
    previous holder without scanning the model's versions."""

    def __init__(self) -> None:
        self._by_claim: dict[tuple[str, str, Any], set[Key]] = defaultdict(set)
        self._data: dict[Key, dict[str, Any]] = {}

    def note(self, key: Key, data: dict[str, Any]) -> None:
        self._data[key] = data
        if data.get("is_latest"):
            self._by_claim[(key[0], "latest", True)].add(key)
        if data.get("stage") in STAGES:
            self._by_claim[(key[0], "stage", data["stage"])].add(key)
        for alias in data.get("aliases") or ():
            self._by_claim[(key[0], "alias", alias)].add(key)

    def take(self, key: Key, kind: str, value: Any) -> None:
        """`key` claims (kind, value): every other holder loses it."""
        held = self._by_claim[(key[0], kind, value)]
        for other in held - {key}:
            data = self._data[other]
            if kind == "latest":
                data["is_latest"] = False
            elif kind == "stage":
                data["stage"] = None
            else:
                data["aliases"] = [a for a in data.get("aliases") or () if a != value] or None
        held.clear()
        held.add(key)

    def drop(self, key: Key, kind: str, value: Any) -> None:
        self._by_claim[(key[0], kind, value)].discard(key)


def _apply(
    data: dict[str, Any],
    alive: dict[Key, bool],
    holders: _Holders,
    key: Key,
    event: dict[str, Any],
) -> None:
    what, new = event.get("what"), event.get("to")
    if what == "stored":
        alive[key] = True
        if type(new) is int:
            data["version"] = new
        return
    if what == "deleted":
        alive[key] = False
        if data.get("is_latest"):
            holders.drop(key, "latest", True)
        if data.get("stage") in STAGES:
            holders.drop(key, "stage", data["stage"])
        for alias in data.get("aliases") or ():
            holders.drop(key, "alias", alias)
        data.update(is_latest=False, stage=None, aliases=None)
        return
    if what == "version":
        data["version"] = new
        return
    if not alive[key]:
        return  # a change the other branch made to a version this one deleted
    if what == "latest":
        if new is True:
            holders.take(key, "latest", True)
        elif data.get("is_latest"):
            holders.drop(key, "latest", True)
        data["is_latest"] = bool(new)
    elif what == "stage":
        if data.get("stage") in STAGES:
            holders.drop(key, "stage", data["stage"])
        if new in STAGES:
            holders.take(key, "stage", new)
        data["stage"] = new
    elif what == "status":
        data["status"] = new
        data["status_reason"] = event.get("reason")
    elif what == "alias":
        old = event.get("from")
        if new is not None:
            holders.take(key, "alias", new)
            data["aliases"] = sorted({*(data.get("aliases") or ()), new})
        elif old is not None:
            holders.drop(key, "alias", old)
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
