"""A registry's events: each change announced once it is written (or held until the caller
has committed it), and a garbage collection's deletions. Built on first use from the
settings, so commands without events never read them."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control_plane.metadata import ModelEntry
from control_plane.registry import lifecycle
from control_plane.registry.events import Event, EventOutlet, cloud_event, version_event

if TYPE_CHECKING:
    from control_plane.registry.gc import GcOutcome
    from control_plane.settings import NexusConfig


class Announcer:
    def __init__(
        self,
        config: Callable[[], NexusConfig],
        root: Path,
        workdir: Path,
        environ: dict[str, str] | None,
        *,
        hold: bool = False,
    ) -> None:
        """`hold`: keep each change's event in `held` until `publish_held`, for a caller
        whose change is done only once it is committed."""
        self._config = config
        self._root = root
        self._workdir = workdir
        self._environ = environ
        self.held: list[Event] | None = [] if hold else None

    @functools.cached_property
    def outlet(self) -> EventOutlet:
        """Where this workspace's events go (`events_file`, `webhook_url`, the outbox)."""
        config = self._config()
        return EventOutlet(
            events_file=config.repo_path(config.events_file, self._root)
            if config.events_file
            else None,
            webhook_url=config.webhook_url,
            outbox=self._workdir / "outbox.jsonl",
            environ=self._environ,
        )

    @property
    def source(self) -> str:
        return f"/nexusml/{self._root.name}"

    def changed(
        self, kind: str, entry: ModelEntry, recorded: Sequence[tuple[ModelEntry, dict[str, Any]]]
    ) -> None:
        """A version's change (`kind`: stored, promoted, ...); nothing if nothing changed."""
        if not self.outlet.active:
            return
        event = version_event(kind, entry, recorded, self.source)
        if event is None:
            return
        if self.held is not None:
            self.held.append(event)
        else:
            self.outlet.publish([event])

    def collected(self, outcome: GcOutcome, who: str | None) -> None:
        """The objects a garbage collection deleted, one event for all of them."""
        if not (outcome.deleted and self.outlet.active):
            return
        keys = sorted(info.key for info in outcome.deleted)
        data = {"who": who, "deleted": keys, "bytes": outcome.deleted_bytes}
        identity = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        when = lifecycle.event_time()
        self.outlet.publish(
            [cloud_event("store.collected", self.source, "store", when, data, identity)]
        )

    def publish_held(self) -> None:
        if self.held:
            events = list(self.held)
            self.held.clear()
            self.outlet.publish(events)
