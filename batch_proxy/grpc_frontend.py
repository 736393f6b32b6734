"""The Open Inference Protocol over gRPC on the proxy (`--grpc-port`): `ModelInfer` (and
`ModelStreamInfer`) requests join the same queues as HTTP v2 requests of the same model and
stack key, so a gRPC caller and an HTTP caller can share a batch.

Tensors stay bytes end to end: `raw_input_contents` are the bytes `v2batch` joins, and each
caller's rows come back as `raw_output_contents`. Admission is the HTTP path's: the API key
is the `authorization` (or `x-api-key`) metadata; no key is UNAUTHENTICATED, a rate or
a queue past its limit RESOURCE_EXHAUSTED. A request's `priority` parameter (or
`x-priority` metadata) picks its queue level; its gRPC deadline bounds its time in the queue,
and a caller that cancels or runs out of time is dropped from the queue before its batch
leaves (its rows never reach the model).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import orjson

from batch_proxy.answers import Refusal, refusal_of
from batch_proxy.errors import BatchError, DeadlineError, RefusedError, UnknownModel
from nexus_common import v2wire
from nexus_common.grpc_v2 import convert
from nexus_common.grpc_v2 import inference_pb2 as pb
from nexus_common.grpc_v2 import inference_pb2_grpc as rpc
from nexus_common.grpc_v2.serving import GrpcServer

if TYPE_CHECKING:
    from batch_proxy.app import ProxyApp

logger = logging.getLogger("nexus.proxy")

# an HTTP status of the proxy's refusals, as a gRPC status code
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class GrpcFrontend(rpc.GRPCInferenceServiceServicer):
    def __init__(self, app: ProxyApp) -> None:
        self._app = app

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=all(self._app.router.ready().values()))

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="nexusml-proxy", extensions=["binary_tensor_data"])

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        status, _ = await self._upstream(context, request.name, "/ready")
        return pb.ModelReadyResponse(ready=status == 200)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        status, body = await self._upstream(context, request.name, "")
        if status != 200:
            await context.abort(_code(status), _error(body))
        return convert.metadata_of(orjson.loads(body))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        try:
            return await self._infer(request, context)
        except RefusedError as refused:
            await context.abort(_code(refused.status), refused.message)
            raise  # unreachable: abort raises

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request batched as a unary one; answered in order, a failure as its
        `error_message` (the stream goes on)."""
        async for request in requests:
            try:
                answer = await self._infer(request, context)
            except RefusedError as refused:
                yield pb.ModelStreamInferResponse(error_message=refused.message)
            else:
                yield pb.ModelStreamInferResponse(infer_response=answer)

    async def _infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        app = self._app
        metadata = [(k.encode(), str(v).encode()) for k, v in context.invocation_metadata()]
        if app.admission is not None:
            refusal = app.admit(metadata)
            if refusal is not None:
                raise _failed(refusal)
        model = request.model_name
        left = context.time_remaining()
        try:
            parsed = convert.request_of(request)
            asked = parsed.parameters.get("priority") or dict(metadata).get(b"x-priority")
            item = await app.queue_v2(model, parsed, asked, within_s=left)
        except v2wire.V2Error as exc:
            raise RefusedError(400, str(exc)) from None
        except UnknownModel as exc:
            raise RefusedError(404, str(exc)) from None
        except BatchError as exc:
            raise _failed(refusal_of(exc)) from None
        try:
            outputs, info = await asyncio.wait_for(
                asyncio.shield(item.future), item.deadline - item.enqueued
            )
        except (TimeoutError, DeadlineError):
            item.future.cancel()  # still queued: dropped before its batch leaves
            raise RefusedError(504, "the deadline passed while it was queued.") from None
        except BatchError as exc:
            raise _failed(refusal_of(exc)) from None
        except asyncio.CancelledError:
            item.future.cancel()  # the caller cancelled, or its deadline passed
            raise
        wanted = {o["name"] for o in parsed.outputs}
        missing = wanted - {t.name for t in outputs}
        if missing:
            names = ", ".join(sorted(missing))
            raise RefusedError(400, f"the model has no output {names}.")
        chosen = [t for t in outputs if not wanted or t.name in wanted]
        return convert.response_of(model, str(info.get("version") or ""), chosen, parsed.id)

    async def _upstream(self, context: Any, name: str, suffix: str) -> tuple[int, bytes]:
        try:
            pool = self._app.router.pool_for(name)
        except UnknownModel as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # unreachable: abort raises
        return await pool.get(f"/v2/models/{name}{suffix}")


def _failed(refusal: Refusal) -> RefusedError:
    return RefusedError(refusal.status, str(refusal.payload.get("error", "refused.")))


def _code(status: int) -> grpc.StatusCode:
    return _CODES.get(
        status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.UNKNOWN
    )


def _error(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("error", "the upstream refused it."))
    except (orjson.JSONDecodeError, AttributeError):
        return "the upstream refused it."


async def start(app: ProxyApp) -> GrpcServer:
    """The frontend on `--grpc-port` and the health protocol (SERVING while the proxy is
    ready)."""
    frontend = GrpcFrontend(app)
    assert app.settings.grpc_port is not None
    return await GrpcServer.start(
        "the Open Inference Protocol",
        app.settings.host,
        app.settings.grpc_port,
        lambda server: rpc.add_GRPCInferenceServiceServicer_to_server(frontend, server),  # type: ignore[no-untyped-call]
        lambda: all(app.router.ready().values()),
        ("inference.GRPCInferenceService",),
    )
