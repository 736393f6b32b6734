"""The Open Inference Protocol over gRPC on the model server (`--grpc-port`): the same
models, checks and answers as the HTTP v2 routes (`model_server/v2.py`), for direct gRPC
clients (`tritonclient.grpc`, KServe's) and proxy-less deployments.

Tensors stay bytes: `raw_input_contents` in, `raw_output_contents` out. The server token
(`--server-token`) is the `authorization` metadata (`Bearer TOKEN`). Errors are status codes
with one sentence: NOT_FOUND (no such model), UNAVAILABLE (not ready), INVALID_ARGUMENT (a
request that breaks the protocol or the signature, or one the model fails on), INTERNAL (the
model's worker died with the batch), UNAUTHENTICATED.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from model_server import v2
from model_server.errors import ModelNotFoundError, NotReadyError, WorkerFailedError
from model_server.hosting import Models
from nexus_common import v2wire
from nexus_common.grpc_v2 import convert
from nexus_common.grpc_v2 import inference_pb2 as pb
from nexus_common.grpc_v2 import inference_pb2_grpc as rpc
from nexus_common.grpc_v2.serving import GrpcServer

logger = logging.getLogger("nexus.model_server")


class InferenceService(rpc.GRPCInferenceServiceServicer):
    def __init__(self, models: Models, token: str | None) -> None:
        self._models = models
        self._token = token

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        ready = all(h.service.serving is not None for h in self._models.hosted)
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        hosted = self._models.find(request.name)
        if hosted is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model '{request.name}' here.")
        return pb.ModelReadyResponse(
            ready=hosted is not None and hosted.service.serving is not None
        )

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="nexusml", version=v2.package_version(), extensions=["binary_tensor_data"]
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        try:
            found = v2.tensor_model(self._models, request.name)
        except Exception as exc:  # each known failure is a status
            await _abort(context, exc)
            raise  # unreachable: abort raises
        return convert.metadata_of(v2.metadata(request.name, *found))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        await self._authorize(context)
        try:
            return await self._infer(request)
        except Exception as exc:
            await _abort(context, exc)
            raise

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        await self._authorize(context)
        async for request in requests:  # each answered on its own; an error ends no stream
            try:
                answer = await self._infer(request)
            except Exception as exc:
                yield pb.ModelStreamInferResponse(error_message=_sentence(exc))
            else:
                yield pb.ModelStreamInferResponse(infer_response=answer)

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        name = request.model_name
        service, predictor = v2.tensor_model(self._models, name)
        parsed = convert.request_of(request)
        outputs, version = await service.infer(v2.input_arrays(parsed, predictor))
        tensors = [v2.output_tensor(out, array) for out, array in outputs.items()]
        wanted = {o["name"] for o in parsed.outputs}
        if wanted:
            unknown = wanted - {t.name for t in tensors}
            if unknown:
                raise v2wire.V2Error(f"no output named {sorted(unknown)}.")
            tensors = [t for t in tensors if t.name in wanted]
        return convert.response_of(name, version.entry.commit_hash, tensors, parsed.id)

    async def _authorize(self, context: Any) -> None:
        if self._token is None:
            return
        given = dict(context.invocation_metadata()).get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer)."
            )


_STATUSES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (NotReadyError, grpc.StatusCode.UNAVAILABLE),
    (WorkerFailedError, grpc.StatusCode.INTERNAL),
    (v2wire.V2Error, grpc.StatusCode.INVALID_ARGUMENT),
]


def _sentence(exc: BaseException) -> str:
    for kind, _ in _STATUSES:
        if isinstance(exc, kind):
            return str(exc)
    return f"the model failed on this input: {exc}"


async def _abort(context: Any, exc: Exception) -> None:
    """The status and sentence for `exc`: the model's own failure is the caller's input."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    code = next((c for kind, c in _STATUSES if isinstance(exc, kind)), None)
    await context.abort(code or grpc.StatusCode.INVALID_ARGUMENT, _sentence(exc))


async def start(models: Models, host: str, port: int, token: str | None) -> GrpcServer:
    """The service and the health protocol (SERVING once every model serves)."""
    servicer = InferenceService(models, token)
    return await GrpcServer.start(
        "the Open Inference Protocol",
        host,
        port,
        lambda server: rpc.add_GRPCInferenceServiceServicer_to_server(servicer, server),  # type: ignore[no-untyped-call]
        lambda: all(h.service.serving is not None for h in models.hosted),
        ("inference.GRPCInferenceService",),
    )
