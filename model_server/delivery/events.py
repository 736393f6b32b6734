"""The rollout event log behind `GET /deployment`: what the server did, in order, with figures."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("nexus.model_server")

KEEP_EVENTS = 1000

# What happened to a version, in the order a rollout goes through them.
WAITING = "waiting"  # the ref resolves to nothing servable yet (the reason says why)
REFUSED = "refused"  # not approved, rejected or archived: never rolled out
LOADING = "loading"
LOAD_FAILED = "load_failed"
SERVING = "serving"  # the first version, or one switched to without a canary
CANARY = "canary"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
SUPERSEDED = "superseded"  # the ref moved on while this candidate was on trial
FOLLOW_FAILED = "follow_failed"  # the Git remote could not be fetched
METADATA_UNREADABLE = "metadata_unreadable"  # the followed file cannot be read or parsed


# The rollout decisions that are also registry-wide events (CloudEvents, to the events file
# and webhook the workspace or NEXUS_EVENTS_FILE / NEXUS_WEBHOOK_URL name).
PUBLISHED = {
    SERVING: "rollout.loaded",
    CANARY: "rollout.canary_started",
    PROMOTED: "rollout.promoted",
    ROLLED_BACK: "rollout.rolled_back",
    LOAD_FAILED: "rollout.load_failed",
}


class EventLog:
    """Numbered events, the last `KEEP_EVENTS` of them; each is also a log line, and the
    decisions in `PUBLISHED` go to `sink` too (which must not block: it is called on the
    event loop)."""

    def __init__(self, sink: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self._seq = 0
        self.sink = sink

    def add(
        self,
        event: str,
        version: dict[str, Any] | None = None,
        *,
        reason: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        self._seq += 1
        record: dict[str, Any] = {
            "seq": self._seq,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "unix": round(time.time(), 3),
            "event": event,
            "version": version,
        }
        if reason is not None:
            record["reason"] = reason
        record.update(details)
        self._events.append(record)
        label = _label(version)
        logger.info("%s %s%s", event, label, f": {reason}" if reason else "")
        if self.sink is not None and event in PUBLISHED:
            self.sink(PUBLISHED[event], record)
        return record

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._events if e["seq"] > seq]

    def last(self, *kinds: str) -> dict[str, Any] | None:
        """The newest event of one of `kinds`."""
        return next((e for e in reversed(self._events) if e["event"] in kinds), None)


def _label(version: dict[str, Any] | None) -> str:
    if not version:
        return ""
    return f"{version.get('name')}@{str(version.get('commit_hash', ''))[:7]}"
