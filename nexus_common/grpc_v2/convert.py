"""Between the gRPC messages and `v2wire`'s tensors: tensors stay bytes end to end.

A request's inputs come as `raw_input_contents` (one bytes entry per input, in order, as
tritonclient sends them) or as typed `contents`; either way they become `v2wire.Tensor`s
with raw little-endian bytes (BYTES length-prefixed), checked like an HTTP body's. Outputs
go back as `raw_output_contents`, so a gRPC caller gets the same bytes an HTTP binary caller
gets.
"""

from __future__ import annotations

import struct
from typing import Any

from nexus_common import v2wire
from nexus_common.errors import V2Error
from nexus_common.grpc_v2 import inference_pb2 as pb

# the typed `contents` field of each datatype, and its struct format
_CONTENTS = {
    "BOOL": ("bool_contents", "?"), "INT8": ("int_contents", "b"),
    "INT16": ("int_contents", "h"), "INT32": ("int_contents", "i"),
    "INT64": ("int64_contents", "q"), "UINT8": ("uint_contents", "B"),
    "UINT16": ("uint_contents", "H"), "UINT32": ("uint_contents", "I"),
    "UINT64": ("uint64_contents", "Q"), "FP32": ("fp32_contents", "f"),
    "FP64": ("fp64_contents", "d"),
}  # fmt: skip


def parameters(raw: Any) -> dict[str, Any]:
    """A protobuf parameter map as plain values."""
    found: dict[str, Any] = {}
    for key, parameter in raw.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            found[key] = getattr(parameter, choice)
    return found


def request_of(message: pb.ModelInferRequest) -> v2wire.InferRequest:
    """The request as `v2wire` parses an HTTP body: tensors with raw bytes, checked."""
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise V2Error(
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; give one each."
        )
    tensors = []
    for index, given in enumerate(message.inputs):
        tensor = v2wire.Tensor(
            given.name, list(given.shape), given.datatype, parameters=parameters(given.parameters)
        )
        if given.datatype not in v2wire.ITEM_SIZES and given.datatype != v2wire.BYTES:
            raise V2Error(f"input '{given.name}': '{given.datatype}' is not a v2 datatype.")
        tensor.raw = raw[index] if raw else _from_contents(given)
        v2wire.check_raw(tensor, "input")
        tensors.append(tensor)
    outputs = [{"name": o.name, "parameters": parameters(o.parameters)} for o in message.outputs]
    return v2wire.InferRequest(tensors, outputs, message.id or None, parameters(message.parameters))


def _from_contents(given: Any) -> bytes:
    if given.datatype == v2wire.BYTES:
        return v2wire.pack_bytes(given.name, list(given.contents.bytes_contents))
    if given.datatype not in _CONTENTS:
        raise V2Error(f"input '{given.name}': send {given.datatype} as raw_input_contents.")
    field, code = _CONTENTS[given.datatype]
    values = list(getattr(given.contents, field))
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except struct.error as exc:
        raise V2Error(f"input '{given.name}': {exc}.") from None


def response_of(
    model_name: str, model_version: str, outputs: list[v2wire.Tensor], request_id: str | None
) -> pb.ModelInferResponse:
    """Every output as raw bytes, in order."""
    answer = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id or ""
    )
    for tensor in outputs:
        answer.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        answer.raw_output_contents.append(v2wire.to_raw(tensor))
    return answer


def metadata_of(body: dict[str, Any]) -> pb.ModelMetadataResponse:
    """A model's metadata (the HTTP route's JSON) as the gRPC message."""
    answer = pb.ModelMetadataResponse(
        name=body["name"], versions=body.get("versions", []), platform=body.get("platform", "")
    )
    for role in ("inputs", "outputs"):
        for spec in body.get(role, []):
            getattr(answer, role).add(
                name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
            )
    return answer
