"""The Open Inference Protocol ("KServe v2") over a `ModelService`: metadata, readiness and
`POST /v2/models/{name}/infer`, JSON and binary tensors (`nexus_common/v2wire.py`).

    GET  /v2                         server metadata (name, version, extensions)
    GET  /v2/health/live  /v2/health/ready
    GET  /v2/models/{name}           model metadata: its input and outputs
    GET  /v2/models/{name}/ready
    POST /v2/models/{name}/infer     one input tensor (the batch), the model's outputs

The built-in predictors take one tensor, named `input`; a request's whole tensor is one
batch through one version (the canary's share included). Outputs are `output` (or
`output0…`, or an ONNX model's own names), raw bytes when asked for
(`binary_data_output` or an output's `binary_data`), else flat JSON data.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from model_server import openapi_docs as docs
from model_server.errors import ItemDecodeError, NotReadyError
from model_server.hosting import Models
from model_server.inference import TensorPredictor
from model_server.responses import json_response
from model_server.service import ModelService
from nexus_common import v2wire

INPUT_NAME = "input"
_TO_NUMPY = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_FROM_NUMPY = {
    dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype: name
    for name, dtype in _TO_NUMPY.items()
}


router = APIRouter()


def _models(request: Request) -> Models:
    return request.app.state.models  # type: ignore[no-any-return]


ServedModels = Annotated[Models, Depends(_models)]


def _served(models: Models, name: str) -> tuple[ModelService, TensorPredictor] | Response:
    hosted = models.find(name)
    if hosted is None:
        return json_response({"error": f"no model '{name}' here."}, 404)
    service = hosted.service
    predictor = service.require_ready().predictor
    if not isinstance(predictor, TensorPredictor):
        return json_response(
            {
                "error": "the v2 protocol serves TorchScript and ONNX models; this one has a "
                "handler: use POST /predict."
            },
            400,
        )
    return service, predictor


@router.get("/v2")
async def server_metadata() -> Response:
    return json_response(
        {"name": "nexusml", "version": _package_version(), "extensions": ["binary_tensor_data"]}
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
    service, predictor = found
    dims = list(predictor.item_dims) if predictor.item_dims is not None else []
    entry = service.require_ready().entry
    return json_response(
        {
            "name": name,
            "versions": [entry.commit_hash],
            "platform": entry.format or "unknown",
            "inputs": [
                {
                    "name": INPUT_NAME,
                    "datatype": _FROM_NUMPY[np.dtype(predictor.input_dtype)],
                    "shape": [-1, *dims],
                }
            ],
            "outputs": [],
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
        batch = _input_array(parsed, predictor)
        outputs, version = await service.infer(batch)
    except v2wire.V2Error as exc:
        return json_response({"error": str(exc)}, exc.status)
    except ItemDecodeError as exc:
        return json_response({"error": str(exc)}, 400)
    except Exception as exc:  # the model raised on this input: the caller's 400, logged
        return json_response({"error": f"the model failed on this input: {exc}"}, 400)
    return _answer(name, version.entry.commit_hash, outputs, parsed)


def _answer(
    name: str, commit: str, outputs: dict[str, np.ndarray], parsed: v2wire.InferRequest
) -> Response:
    """The outputs asked for (all when none are named), JSON or binary as asked."""
    tensors = [_tensor(out_name, array) for out_name, array in outputs.items()]
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


def _input_array(request: v2wire.InferRequest, predictor: TensorPredictor) -> np.ndarray:
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [t.name for t in request.inputs]
        raise v2wire.V2Error(f"the model takes one input named '{INPUT_NAME}', not {names}.")
    tensor = request.inputs[0]
    dtype = _TO_NUMPY[tensor.datatype]
    if tensor.raw is not None:
        array = np.frombuffer(tensor.raw, dtype=dtype).reshape(tensor.shape)
    else:
        try:
            array = np.asarray(tensor.data, dtype=dtype).reshape(tensor.shape)
        except (TypeError, ValueError) as exc:
            raise v2wire.V2Error(
                f"input '{tensor.name}': data does not fit its shape: {exc}."
            ) from None
    if not array.shape or array.shape[0] == 0:
        raise v2wire.V2Error(f"input '{tensor.name}' needs a batch dimension of at least 1.")
    # torch wants a writable array; a tensor of bytes from the body is read-only (copied here)
    return np.require(array, dtype=predictor.input_dtype, requirements=["C", "W"])


def _tensor(name: str, array: np.ndarray) -> v2wire.Tensor:
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    datatype = _FROM_NUMPY.get(dtype)
    if datatype is None:
        array = array.astype(np.float32)
        datatype = "FP32"
    little = array.astype(_TO_NUMPY[datatype], copy=False)
    return v2wire.Tensor(name, list(array.shape), datatype, raw=little.tobytes())


def _package_version() -> str:
    try:
        return version("nexusml")
    except PackageNotFoundError:
        return "0"
