"""Device mode: following a ref through the registry's update stream, with no Git clone.

`GET {registry}/api/v1/models/{name}/refs/{ref}/watch` sends the version the ref names
(Server-Sent Events) at once and whenever it changes. The follower writes each one into
the server's own workspace as a one-version `.nexus_meta.json` (atomically) and wakes
the rollout, which then fetches, verifies (sha256, and the signature where the trust
policy asks) and rolls out exactly as when it watches a Git workspace. A dropped stream
is reopened with `Last-Event-ID`, and the registry sends the state again if it moved
meanwhile: the device always ends on the latest version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from control_plane.metadata import METADATA_FILENAME
from nexus_common.files import atomic_write

logger = logging.getLogger("nexus.model_server")

RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # between reconnections, then 5 s each


class Following:
    """What both followers hold: the ref followed, the workspace file, the wake-up."""

    def __init__(
        self,
        registry_url: str,
        model: str,
        ref: str,
        workspace: Path,
        on_change: Callable[[], None],
        token: str | None = None,
    ) -> None:
        self.registry_url = registry_url
        self.model, self.ref, self.token = model, ref, token
        self.metadata = workspace / METADATA_FILENAME
        self._on_change = on_change
        self.connected = False
        self.last_error: str | None = None


class StreamFollower(Following):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model, ref, token = self.model, self.ref, self.token
        self.url = (
            f"{self.registry_url.rstrip('/')}/api/v1/models/{quote(model, safe='')}"
            f"/refs/{quote(ref, safe='')}/watch"
        )
        self._headers = {"Accept": "text/event-stream"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.last_event_id: str | None = None

    async def run(self) -> None:
        """Follow until cancelled, reconnecting after any failure."""
        failures = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=60.0)) as client:
            while True:
                try:
                    await self._follow(client)
                    failures = 0
                except (httpx.HTTPError, ValueError) as exc:
                    self.connected = False
                    said = str(exc) or type(exc).__name__
                    if said != self.last_error:
                        logger.warning("the registry's update stream failed: %s", said)
                    self.last_error = said
                    failures += 1
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1] if failures else 0.2)

    async def _follow(self, client: httpx.AsyncClient) -> None:
        headers = dict(self._headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        async with client.stream("GET", self.url, headers=headers) as reply:
            if reply.status_code != 200:
                body = (await reply.aread()).decode(errors="replace")[:200]
                raise ValueError(f"{self.url} answered {reply.status_code}: {body}")
            self.connected, self.last_error = True, None
            event: dict[str, str] = {}
            async for line in reply.aiter_lines():
                if line == "":
                    if event.get("event") == "version" and "data" in event:
                        self._take(event.get("id"), json.loads(event["data"]))
                    event = {}
                elif not line.startswith(":"):
                    field, _, value = line.partition(":")
                    event[field] = value.removeprefix(" ")
        self.connected = False  # the registry closed it: reconnect

    def _take(self, event_id: str | None, payload: dict[str, Any]) -> None:
        write_version(self.metadata, payload.get("entry"))
        if event_id is not None:
            self.last_event_id = event_id
        self._on_change()


class GrpcStreamFollower(Following):
    """The same, over the registry's gRPC stream (`NEXUS_REGISTRY_URL=grpc://HOST:PORT`):
    `Updates.Watch` with the last generation seen, so a reconnection resumes without a
    repeat and ends on the latest version."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = self.registry_url.removeprefix("grpc://").rstrip("/")
        self._metadata = [("authorization", f"Bearer {self.token}")] if self.token else []
        self.last_seq = 0

    async def run(self) -> None:
        """Follow until cancelled, reconnecting after any failure."""
        import grpc

        from nexus_common.grpc_v2 import updates_pb2 as pb
        from nexus_common.grpc_v2 import updates_pb2_grpc as rpc

        failures = 0
        while True:
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    watch = rpc.UpdatesStub(channel).Watch(  # type: ignore[no-untyped-call]
                        pb.WatchRequest(model=self.model, ref=self.ref, after=self.last_seq),
                        metadata=self._metadata,
                    )
                    async for update in watch:
                        self.connected, self.last_error, failures = True, None, 0
                        entry = json.loads(update.entry_json) if update.entry_json else None
                        write_version(self.metadata, entry)
                        self.last_seq = int(update.seq)
                        self._on_change()
                self.connected = False  # the registry ended it: reconnect
            except grpc.aio.AioRpcError as exc:
                self.connected = False
                said = f"{exc.code().name}: {exc.details()}"
                if said != self.last_error:
                    logger.warning("the registry's gRPC update stream failed: %s", said)
                self.last_error = said
                failures += 1
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1] if failures else 0.2)


def write_version(metadata: Path, entry: dict[str, Any] | None) -> None:
    """The workspace's one-version `.nexus_meta.json`, written atomically."""
    document = {"schema_version": 1, "models": [entry] if entry else []}
    metadata.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(metadata, json.dumps(document, indent=2).encode())
