"""The Open Inference Protocol ("KServe v2") over a `ModelService`: metadata, readiness and
`POST /v2/models/{name}/infer`, JSON and binary tensors (`nexus_common/v2wire.py`).

    GET  /v2                         server metadata (name, version, extensions)
    GET  /v2/health/live  /v2/health/ready
    GET  /v2/models/{name}           model metadata: its inputs and outputs (the signature)
    GET  /v2/models/{name}/ready
    GET  /v2/models/{name}/stats     the statistics extension (inference and execution counts,
                                     successes and failures, queue and compute times)
    GET  /v2/models/{name}/config    the batch size it takes, its instances, its signature
    POST /v2/models/{name}/infer     every input tensor (the batch), the outputs asked for

A request's inputs are checked against the model's signature before anything runs (a
wrong name, datatype or shape is a 400 naming the tensor); its tensors are one batch
through one version (the canary's share included). Outputs are named by the signature,
raw bytes when asked for (`binary_data_output` or an output's `binary_data`), else JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from control_plane.core.invoke import NUMPY_DATATYPES, numpy_dtype
from model_server import openapi_docs as docs
from model_server.errors import (
    ItemDecodeError,
    ModelNotFoundError,
    NotReadyError,
    WorkerFailedError,
)
from model_server.hosting import Models
from model_server.responses import json_response
from model_server.service import ModelService
from model_server.tensors import TensorPredictor
from nexus_common import v2wire, wire
from nexus_common.signature import Signature, check_request

router = APIRouter()


def _models(request: Request) -> Models:
    return request.app.state.models  # type: ignore[no-any-return]


ServedModels = Annotated[Models, Depends(_models)]


def tensor_model(models: Models, name: str) -> tuple[ModelService, TensorPredictor]:
    """The model called `name`, serving, with tensors: ModelNotFoundError, NotReadyError, or
    V2Error for a handler model (the HTTP routes and the gRPC service say the same)."""
    hosted = models.find(name)
    if hosted is None:
        raise ModelNotFoundError(f"no model '{name}' here.")
    service = hosted.service
    predictor = service.require_ready().predictor
    if not isinstance(predictor, TensorPredictor):
        raise v2wire.V2Error(
            "the v2 protocol serves TorchScript and ONNX models; this one has a handler: use "
            "POST /predict."
        )
    return service, predictor


def _served(models: Models, name: str) -> tuple[ModelService, TensorPredictor] | Response:
    try:
        return tensor_model(models, name)
    except ModelNotFoundError as exc:
        return json_response({"error": exc.message}, 404)
    except v2wire.V2Error as exc:
        return json_response({"error": exc.message}, exc.status)


def metadata(name: str, service: ModelService, predictor: TensorPredictor) -> dict[str, Any]:
    """A model's v2 metadata: its inputs and outputs (the signature)."""
    entry = service.require_ready().entry
    signature = predictor.signature
    return {
        "name": name,
        "versions": [entry.commit_hash],
        "platform": entry.format or "unknown",
        "inputs": [spec.to_json() for spec in predictor.input_specs],
        "outputs": [spec.to_json() for spec in signature.outputs] if signature else [],
        # "known": the proxy checks requests against it before batching them
        "parameters": {"signature": "known" if signature else "unknown"},
    }


@router.get("/v2")
async def server_metadata() -> Response:
    return json_response(
        {"name": "nexusml", "version": package_version(), "extensions": ["binary_tensor_data"]}
    )


@router.get("/v2/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready", responses=docs.errors(503))
async def ready(models: ServedModels) -> Response:
    ok = all(h.service.serving is not None for h in models.hosted)
    return json_response({"ready": ok}, 200 if ok else 503)


@router.get("/v2/models/{name}", responses=docs.errors(400, 404, 503))
async def model_metadata(name: str, models: ServedModels) -> Response:
    found = _served(models, name)
    if isinstance(found, Response):
        return found
    return json_response(metadata(name, *found))


@router.get("/v2/models/{name}/stats", responses=docs.errors(400, 404, 503))
async def model_stats(name: str, models: ServedModels) -> Response:
    found = _served(models, name)
    if isinstance(found, Response):
        return found
    service, _ = found
    version = service.require_ready().entry.commit_hash
    return json_response({"model_stats": [service.stats.to_json(name, version)]})


@router.get("/v2/models/{name}/config", responses=docs.errors(400, 404, 503))
async def model_config(name: str, request: Request, models: ServedModels) -> Response:
    found = _served(models, name)
    if isinstance(found, Response):
        return found
    service, predictor = found
    signature = predictor.signature
    gpu = predictor.device.startswith("cuda")
    return json_response(
        {
            "name": name,
            "platform": service.require_ready().entry.format or "unknown",
            "max_batch_size": request.app.state.max_batch_size,
            "instance_group": [
                {"count": service.max_concurrent_batches, "kind": "KIND_GPU" if gpu else "KIND_CPU"}
            ],
            "input": [_config_tensor(spec.to_json()) for spec in predictor.input_specs],
            "output": [_config_tensor(s.to_json()) for s in signature.outputs] if signature else [],
        }
    )


@router.get("/v2/models/{name}/ready", responses=docs.errors(400, 404, 503))
async def model_ready(name: str, models: ServedModels) -> Response:
    try:
        found = _served(models, name)
    except NotReadyError as exc:
        return json_response({"ready": False, "error": exc.message}, 503)
    return found if isinstance(found, Response) else json_response({"ready": True})


@router.post(
    "/v2/models/{name}/infer",
    responses=docs.errors(400, 401, 404, 413, 503),
    openapi_extra=docs.json_body(
        {"type": "object", "required": ["inputs"]},
        "an Open Inference Protocol request (JSON, or binary tensors after a JSON header)",
    ),
)
async def infer(name: str, request: Request, models: ServedModels) -> Response:
    refused = request.app.state.guard(request)
    if refused is not None:
        return refused  # type: ignore[no-any-return]
    found = _served(models, name)
    if isinstance(found, Response):
        return found
    service, predictor = found
    try:
        parsed = v2wire.parse_request(
            await request.body(), request.headers.get(v2wire.HEADER_LENGTH), orjson.loads
        )
        inputs = input_arrays(parsed, predictor)
        outputs, version = await service.infer(inputs)
    except v2wire.V2Error as exc:
        return json_response({"error": str(exc)}, exc.status)
    except ItemDecodeError as exc:
        return json_response({"error": str(exc)}, 400)
    except WorkerFailedError as exc:
        return json_response({"error": exc.message}, wire.BATCH_FAILED)
    except Exception as exc:  # the model raised on this input: the caller's 400, logged
        return json_response({"error": f"the model failed on this input: {exc}"}, 400)
    return _answer(name, version.entry.commit_hash, outputs, parsed)


def _answer(
    name: str, commit: str, outputs: dict[str, np.ndarray], parsed: v2wire.InferRequest
) -> Response:
    """The outputs asked for (all when none are named), JSON or binary as asked."""
    tensors = [output_tensor(out_name, array) for out_name, array in outputs.items()]
    wanted = {o.get("name") for o in parsed.outputs}
    if wanted:
        unknown = wanted - {t.name for t in tensors}
        if unknown:
            return json_response({"error": f"no output named {sorted(map(str, unknown))}."}, 400)
        tensors = [t for t in tensors if t.name in wanted]
    body, header_length = v2wire.encode_response(name, commit, tensors, parsed)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type=v2wire.BINARY_CONTENT_TYPE,
        headers={v2wire.HEADER_LENGTH: str(header_length)},
    )


def input_arrays(request: v2wire.InferRequest, predictor: TensorPredictor) -> dict[str, np.ndarray]:
    """The request's tensors as arrays, checked against the model's signature first (the
    proxy makes the same check before it batches): every input named, of its datatype and
    shape, nothing else; the outputs asked for are ones the model returns."""
    signature = predictor.signature
    inputs: list[tuple[str, str, Sequence[int]]]
    if signature is None:  # not known: a one-input model of any shape (the names checked)
        signature = Signature(predictor.input_specs, ())
        inputs = [(t.name, signature.inputs[0].datatype, _any(t.shape)) for t in request.inputs]
    else:
        inputs = [(t.name, t.datatype, t.shape) for t in request.inputs]
    problem = check_request(signature, inputs, (str(o.get("name")) for o in request.outputs))
    if problem is not None:
        raise v2wire.V2Error(problem)
    specs = {spec.name: spec for spec in signature.inputs}
    arrays = {t.name: _array(t, numpy_dtype(specs[t.name].datatype)) for t in request.inputs}
    rows = {len(array) for array in arrays.values()}
    if len(rows) != 1 or 0 in rows:
        raise v2wire.V2Error("every input needs the same first (batch) dimension, at least 1.")
    return arrays


def _any(shape: list[int]) -> tuple[int, ...]:
    """A shape that passes an unknown signature's check (its rank is not known either)."""
    return (-1,) if shape else ()


def _array(tensor: v2wire.Tensor, dtype: np.dtype[Any]) -> np.ndarray:
    given = numpy_dtype(tensor.datatype)
    if tensor.datatype == v2wire.BYTES:
        elements = v2wire.unpack_bytes(v2wire.to_raw(tensor))
        array = np.empty(len(elements), dtype=object)
        array[:] = elements
        return array.reshape(tensor.shape)
    if tensor.raw is not None:
        array = np.frombuffer(tensor.raw, dtype=given).reshape(tensor.shape)
    else:
        try:
            array = np.asarray(tensor.data, dtype=given).reshape(tensor.shape)
        except (TypeError, ValueError, OverflowError) as exc:
            raise v2wire.V2Error(
                f"input '{tensor.name}': data does not fit its shape: {exc}."
            ) from None
    if not array.shape:
        raise v2wire.V2Error(f"input '{tensor.name}' needs a batch dimension.")
    # A view of the body stays read-only: the batch is copied once on its way to the model
    # (into a worker's shared memory, or by TorchPredictor into a writable array for torch).
    return np.require(array, dtype=dtype, requirements=["C"])


def _config_tensor(spec: dict[str, Any]) -> dict[str, Any]:
    """A signature tensor as Triton's model configuration writes one (dims past the batch)."""
    return {
        "name": spec["name"],
        "data_type": f"TYPE_{spec['datatype']}",
        "dims": spec["shape"][1:],
    }


def output_tensor(name: str, array: np.ndarray) -> v2wire.Tensor:
    if array.dtype.kind in "OSU":  # strings or bytes: BYTES
        raw = v2wire.pack_bytes(name, list(array.reshape(-1)))
        return v2wire.Tensor(name, list(array.shape), v2wire.BYTES, raw=raw)
    array = np.ascontiguousarray(array)
    datatype = NUMPY_DATATYPES.get(array.dtype.name)
    if datatype is None:
        array = array.astype(np.float32)
        datatype = "FP32"
    little = array.astype(numpy_dtype(datatype), copy=False)
    return v2wire.Tensor(name, list(array.shape), datatype, raw=little.tobytes())


def package_version() -> str:
    try:
        return version("nexusml")
    except PackageNotFoundError:
        return "0"
