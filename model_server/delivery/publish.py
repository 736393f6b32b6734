"""The rollout's decisions as registry events (CloudEvents), sent off the event loop.

The sinks are the workspace's (`events_file`, `webhook_url` in `.nexusrc`) or the
server's environment (NEXUS_EVENTS_FILE, NEXUS_WEBHOOK_URL, NEXUS_WEBHOOK_SECRET). One
worker thread sends them in order; a slow webhook delays only that thread, never a batch.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from control_plane import NexusError, Registry
from control_plane.registry.events import EventOutlet, cloud_event
from model_server.settings import ServerSettings

logger = logging.getLogger("nexus.model_server")


class RolloutPublisher:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.source = f"/nexusml/model-server/{socket.gethostname()}/{os.getpid()}"
        self._run = uuid.uuid4().hex  # this server's run: with the log's seq, the event's id
        self._outlet: EventOutlet | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nexus-events")
        self.failing: str | None = None  # the last send's unexpected error, until one works

    def __call__(self, kind: str, record: dict[str, Any]) -> None:
        self._worker.submit(self._send_or_say, kind, dict(record))

    def _send_or_say(self, kind: str, record: dict[str, Any]) -> None:
        """A bug in sending is logged (its traceback once) and named in /health, never lost
        in a future nobody reads; the next event is tried as usual."""
        try:
            self._send(kind, record)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self.failing:
                logger.exception("publishing the %s event failed", kind)
            self.failing = error
        else:
            self.failing = None

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=False)

    def _send(self, kind: str, record: dict[str, Any]) -> None:
        try:
            outlet = self._outlet or Registry(self.settings.repo).events
        except NexusError as exc:
            logger.warning("events are not sent: %s", exc.message)
            return
        self._outlet = outlet
        if not outlet.active:
            return
        version = record.get("version") or {}
        data = {
            "model": version.get("name") or self.settings.model_name,
            "commit": version.get("commit_hash"),
            "ref": self.settings.model_ref,
            **{k: v for k, v in record.items() if k not in ("version", "unix")},
        }
        subject = f"{data['model']}@{data['commit']}"
        identity = f"{self._run}#{record['seq']}"
        outlet.publish([cloud_event(kind, self.source, subject, record["time"], data, identity)])
