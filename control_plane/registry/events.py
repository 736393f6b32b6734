"""An event for every registry change, in CloudEvents 1.0 JSON, to a file and a webhook.

One change (a promotion, an approval, a store, ...) is one event, whatever number of
history entries it wrote (a promotion also takes the stage from the version that held
it: both are in the event's `data.changes`). The event's id is derived from the change's
history `seq`, so the same change read again has the same id.

Sinks (`.nexusrc` or NEXUS_*): `events_file` (JSON lines, appended) and `webhook_url`
(a POST per event, the body signed with HMAC-SHA256 under NEXUS_WEBHOOK_SECRET, which
is read from the environment only, as `X-Nexus-Signature-256: sha256=<hex>`, as GitHub
signs its webhooks). A webhook that fails or is slow never fails the command and never
holds it more than `DELIVERY_BUDGET_S`: what was not delivered waits in the outbox
(`.nexus/outbox.jsonl`) and is retried, with backoff, by the next command or by
`nexus events flush`. Standard library only: the CLI's start-up stays light.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from control_plane.metadata import ModelEntry

SPEC_VERSION = "1.0"
TYPE_PREFIX = "dev.nexusml."
DELIVERY_BUDGET_S = 2.0
SIGNATURE_HEADER = "X-Nexus-Signature-256"
SECRET_VARIABLE = "NEXUS_WEBHOOK_SECRET"
BACKOFF_S = (5, 30, 120, 600, 3600)  # after the 1st, 2nd, ... failed delivery

Event = dict[str, Any]

# The history field each kind of change is about: its `from` and `to` are the event's
# `before` and `after`, its `seq` the change's identity.
MAIN_FIELD = {
    "stored": "stored",
    "promoted": "stage",
    "archived": "stage",
    "approved": "status",
    "rejected": "status",
    "rolled_back": "latest",
    "alias_set": "alias",
    "alias_removed": "alias",
    "deleted": "deleted",
    "signed": "signature",
}


def version_event(
    kind: str,
    entry: ModelEntry,
    recorded: Iterable[tuple[ModelEntry, dict[str, Any]]],
    source: str,
    **data: Any,
) -> Event | None:
    """The event of one change to `entry` (`kind`: promoted, approved, ...), from the history
    events the change recorded; None when it recorded nothing (nothing changed)."""
    changes = [
        {"model": e.model_name, "commit": e.commit_hash, "version": e.data.get("version"), **h}
        for e, h in recorded
    ]
    own = [
        c for c in changes if c["commit"] == entry.commit_hash and c["model"] == entry.model_name
    ]
    if not own:
        return None
    about = [c for c in own if c["what"] == MAIN_FIELD.get(kind)]
    main = (about or own)[-1]
    body = {
        "model": entry.model_name,
        "commit": entry.commit_hash,
        "version": entry.data.get("version"),
        "who": main.get("who"),
        "before": main.get("from"),
        "after": main.get("to"),
        "changes": changes,
        **data,
    }
    if main.get("reason") is not None:
        body["reason"] = main["reason"]
    subject = f"{entry.model_name}@{entry.commit_hash}"
    return cloud_event(
        f"version.{kind}", source, subject, str(main.get("when")), body, f"{subject}#{main['seq']}"
    )


def cloud_event(
    kind: str, source: str, subject: str, when: str, data: dict[str, Any], identity: str
) -> Event:
    """A CloudEvents 1.0 event (structured JSON); `identity` names the change, the id is its
    digest, so the same change always has the same id."""
    return {
        "specversion": SPEC_VERSION,
        "id": hashlib.sha256(f"{TYPE_PREFIX}{kind}|{identity}".encode()).hexdigest()[:32],
        "source": source,
        "type": TYPE_PREFIX + kind,
        "subject": subject,
        "time": when,
        "datacontenttype": "application/json",
        "data": data,
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivered:
    sent: int  # delivered to the webhook now (new and retried)
    waiting: int  # in the outbox after this attempt


class EventOutlet:
    """Where one workspace's events go: the file, the webhook, the outbox."""

    def __init__(
        self,
        *,
        events_file: Path | None,
        webhook_url: str | None,
        outbox: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.events_file = events_file
        self.webhook_url = webhook_url
        self.outbox = outbox
        self._secret = (os.environ if environ is None else environ).get(SECRET_VARIABLE)

    @property
    def active(self) -> bool:
        return self.events_file is not None or self.webhook_url is not None

    def publish(self, events: Iterable[Event]) -> Delivered:
        """Append to the file, then deliver to the webhook within the budget (what is due
        in the outbox first, in order); never raises for a failed delivery."""
        events = list(events)
        if self.events_file is not None and events:
            self._append(self.events_file, events)
        if self.webhook_url is None:
            return Delivered(0, 0)
        return self._deliver(events, force=False)

    def flush(self) -> Delivered:
        """Retry everything in the outbox now, backoff or not (`nexus events flush`)."""
        if self.webhook_url is None:
            return Delivered(0, len(self.waiting()))
        return self._deliver([], force=True)

    def waiting(self) -> list[dict[str, Any]]:
        """The outbox: {event, attempts, next_try, error} each."""
        try:
            lines = self.outbox.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def recent(self, limit: int) -> list[Event]:
        """The last `limit` events of the events file."""
        if self.events_file is None:
            return []
        try:
            lines = self.events_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines[-limit:] if line.strip()]

    # -- delivery ------------------------------------------------------------------

    def _deliver(self, events: list[Event], *, force: bool) -> Delivered:
        deadline = time.monotonic() + DELIVERY_BUDGET_S
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.outbox) + ".lock", timeout=DELIVERY_BUDGET_S):
            now = time.time()
            queued = self.waiting()
            due = [q for q in queued if force or q["next_try"] <= now]
            later = [q for q in queued if not (force or q["next_try"] <= now)]
            todo = [*due, *({"event": e, "attempts": 0, "next_try": now} for e in events)]
            sent, kept = 0, list(later)
            for position, item in enumerate(todo):
                left = deadline - time.monotonic()
                error = self._post(item["event"], left) if left > 0.05 else "no time left"
                if error is None:
                    sent += 1
                    continue
                if left <= 0.05 or error.startswith("unreachable"):
                    # the rest cannot make it this time: keep them as they were, in order
                    kept += [self._failed(item, error, now)] + [
                        rest if rest["attempts"] else {**rest, "error": error}
                        for rest in todo[position + 1 :]
                    ]
                    break
                kept.append(self._failed(item, error, now))
            self._rewrite(kept)
        return Delivered(sent, len(kept))

    def _post(self, event: Event, timeout_s: float) -> str | None:
        """None when delivered (any 2xx); else why not."""
        assert self.webhook_url is not None
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        request = urllib.request.Request(self.webhook_url, body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=max(0.05, timeout_s)) as reply:
                reply.read()
                return None if 200 <= reply.status < 300 else f"answered {reply.status}"
        except urllib.error.HTTPError as exc:
            return f"answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"unreachable: {reason}"

    @staticmethod
    def _failed(item: dict[str, Any], error: str, now: float) -> dict[str, Any]:
        attempts = item["attempts"] + 1
        wait = BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1]
        return {
            "event": item["event"],
            "attempts": attempts,
            "next_try": now + wait,
            "error": error,
        }

    def _rewrite(self, items: list[dict[str, Any]]) -> None:
        tmp = self.outbox.with_name(self.outbox.name + ".tmp")
        tmp.write_text("".join(json.dumps(i, separators=(",", ":")) + "\n" for i in items))
        os.replace(tmp, self.outbox)

    @staticmethod
    def _append(path: Path, events: list[Event]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        with FileLock(str(path) + ".lock", timeout=10), path.open("a", encoding="utf-8") as out:
            out.write(lines)
