"""The registry's update stream over gRPC (`nexus-registry --grpc-port`): `Updates.Watch`
sends what the SSE stream sends (`api.ref_changes`), for devices that follow a ref with gRPC
(`NEXUS_REGISTRY_URL=grpc://HOST:PORT`). A reader's token is the `authorization` metadata;
`after` resumes without a repeat; the stream ends when the caller leaves or the registry
stops (the device reconnects to the next one)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from control_plane.core.errors import NexusError, NotFoundError, UnauthorizedError
from control_plane.web import views
from control_plane.web.api import ref_changes
from control_plane.web.state import RegistryState
from nexus_common.grpc_v2 import updates_pb2 as pb
from nexus_common.grpc_v2 import updates_pb2_grpc as rpc
from nexus_common.grpc_v2.serving import GrpcServer

logger = logging.getLogger("nexus.registry")


class UpdatesService(rpc.UpdatesServicer):
    def __init__(self, state: RegistryState) -> None:
        self._state = state

    async def Watch(
        self, request: pb.WatchRequest, context: Any
    ) -> AsyncIterator[pb.VersionUpdate]:
        state = self._state
        metadata = dict(context.invocation_metadata())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        try:
            state.actor(token.strip() if scheme.lower() == "bearer" else None)
            views.find_model(state.document(), request.model)
        except UnauthorizedError as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        except NotFoundError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        except NexusError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

        async def over() -> bool:
            return state.stopping() or context.cancelled()

        after = request.after or None
        async for change in ref_changes(state, request.model, request.ref, after, over):
            if change is None:
                continue  # gRPC keeps its own connection alive
            seq, payload = change
            entry = json.loads(payload).get("entry")
            yield pb.VersionUpdate(
                seq=seq,
                model=request.model,
                ref=request.ref,
                entry_json=json.dumps(entry) if entry is not None else "",
            )


async def start(state: RegistryState, host: str, port: int) -> GrpcServer:
    service = UpdatesService(state)
    return await GrpcServer.start(
        "the update stream",
        host,
        port,
        lambda server: rpc.add_UpdatesServicer_to_server(service, server),  # type: ignore[no-untyped-call]
        lambda: not state.stopping(),
        ("nexus.updates.Updates",),
    )
