"""The Open Inference Protocol ("KServe v2") on the wire: JSON tensors and the binary
data extension, parsed and written without decoding a tensor's bytes.

A request or response is a JSON header, optionally followed by the raw bytes of the
tensors whose `parameters.binary_data_size` says so, in order; the header's length is
the `Inference-Header-Content-Length` HTTP header. A tensor here keeps either its raw
little-endian bytes (`raw`) or its JSON `data` (a flat or nested list), so the proxy can
concatenate and slice batches as bytes, and the model server turns them into arrays.

Standard library only: the proxy and the model server share it, as they share `wire`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nexus_common.errors import V2Error as V2Error  # (its users name it v2wire.V2Error)

HEADER_LENGTH = "inference-header-content-length"
Loads = Callable[[bytes], Any]
BINARY_CONTENT_TYPE = "application/octet-stream"

BYTES = "BYTES"  # variable-length elements: each a 4-byte little-endian length, then its bytes
_LENGTH = struct.Struct("<I")
# Bytes per element of each fixed-size datatype.
ITEM_SIZES = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
}


_STRUCT_CODES = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}


@dataclass
class Tensor:
    """One named tensor: its shape, datatype and either raw bytes or JSON data."""

    name: str
    shape: list[int]
    datatype: str
    raw: bytes | None = None
    data: list[Any] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def item_size(self) -> int:
        return ITEM_SIZES[self.datatype]

    def row_offsets(self) -> list[int]:
        """Where each row (an index of the first dimension) starts in `raw`, and its end:
        rows of a fixed-size datatype are all one size, BYTES elements are walked."""
        raw = to_raw(self)
        rows = self.shape[0] if self.shape else 1
        if self.datatype != BYTES:
            size = len(raw) // rows if rows else 0
            return [row * size for row in range(rows + 1)]
        per_row = math.prod(self.shape[1:])
        starts = [0]
        offset = 0
        for _ in range(rows):
            for _ in range(per_row):
                offset += _LENGTH.size + _LENGTH.unpack_from(raw, offset)[0]
            starts.append(offset)
        return starts


@dataclass
class InferRequest:
    """A parsed `POST /v2/models/{name}/infer` body."""

    inputs: list[Tensor]
    outputs: list[dict[str, Any]]  # requested outputs, as sent (name, parameters)
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def wants_binary(self, output: str) -> bool:
        """Whether `output` is to be answered as raw bytes (per output, else the request's
        `binary_data_output`, else JSON)."""
        for requested in self.outputs:
            if requested.get("name") == output:
                binary = (requested.get("parameters") or {}).get("binary_data")
                if binary is not None:
                    return bool(binary)
        return bool(self.parameters.get("binary_data_output", False))


def parse_request(
    body: bytes, header_length: str | None, loads: Loads = json.loads
) -> InferRequest:
    """The request's tensors; raw bytes stay bytes (one copy, never decoded). `loads`: a
    faster JSON parser where the caller has one (the proxy passes orjson's: JSON tensor
    data is megabytes of numbers)."""
    header, rest = _split(body, header_length, loads)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error("an inference request needs a non-empty 'inputs' list.")
    tensors = _tensors(inputs, rest, "input")
    outputs = header.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise V2Error("'outputs' must be a list of objects.")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error("'parameters' must be an object.")
    request_id = header.get("id")
    return InferRequest(tensors, outputs, str(request_id) if request_id else None, parameters)


def parse_response(body: bytes, header_length: str | None) -> tuple[dict[str, Any], list[Tensor]]:
    """An inference response's header and its output tensors."""
    header, rest = _split(body, header_length, json.loads)
    outputs = header.get("outputs")
    if not isinstance(outputs, list):
        raise V2Error("an inference response needs an 'outputs' list.")
    return header, _tensors(outputs, rest, "output")


def encode_request(
    inputs: list[Tensor], parameters: dict[str, Any] | None = None
) -> tuple[bytes, int]:
    """A request with every input as raw bytes: the body and its header's length."""
    specs = [
        {
            "name": t.name,
            "shape": t.shape,
            "datatype": t.datatype,
            "parameters": {"binary_data_size": len(to_raw(t))},
        }
        for t in inputs
    ]
    header: dict[str, Any] = {"inputs": specs}
    if parameters:
        header["parameters"] = parameters
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([encoded, *(to_raw(t) for t in inputs)]), len(encoded)


def encode_response(
    model_name: str,
    model_version: str | None,
    outputs: list[Tensor],
    request: InferRequest,
    extra: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, its JSON header's length."""
    specs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in outputs:
        spec: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if request.wants_binary(tensor.name) and tensor.raw is not None:
            spec["parameters"] = {"binary_data_size": len(tensor.raw)}
            chunks.append(tensor.raw)
        else:
            spec["data"] = values(tensor)
        specs.append(spec)
    header: dict[str, Any] = {"model_name": model_name, "outputs": specs}
    if model_version:
        header["model_version"] = model_version
    if request.id:
        header["id"] = request.id
    if extra:
        header["parameters"] = extra
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not chunks:
        return encoded, None
    return b"".join([encoded, *chunks]), len(encoded)


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's little-endian bytes (packed from its JSON data if need be); BYTES
    elements each as a 4-byte length and its bytes (a JSON string as UTF-8)."""
    if tensor.raw is None:
        flat = _flatten(tensor.data or [])
        if len(flat) != tensor.elements:
            raise V2Error(
                f"'{tensor.name}' has {len(flat)} values for shape {tensor.shape}, which "
                f"needs {tensor.elements}."
            )
        if tensor.datatype == BYTES:
            tensor.raw = pack_bytes(tensor.name, flat)
            return tensor.raw
        try:
            tensor.raw = struct.pack(f"<{len(flat)}{_STRUCT_CODES[tensor.datatype]}", *flat)
        except (struct.error, OverflowError) as exc:  # FP16 overflows rather than errs
            raise V2Error(f"'{tensor.name}': a value is not {tensor.datatype}: {exc}.") from None
    return tensor.raw


def pack_bytes(name: str, elements: list[Any]) -> bytes:
    """BYTES elements (str as UTF-8, or bytes) with their 4-byte length prefixes."""
    parts: list[bytes] = []
    for element in elements:
        if isinstance(element, str):
            element = element.encode()
        elif not isinstance(element, bytes | bytearray):
            raise V2Error(f"'{name}': a BYTES element must be a string, not {element!r}.")
        parts += (_LENGTH.pack(len(element)), bytes(element))
    return b"".join(parts)


def unpack_bytes(raw: bytes) -> list[bytes]:
    """The elements of a BYTES tensor's raw bytes (checked already: `check_raw`)."""
    elements = []
    offset = 0
    while offset < len(raw):
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def values(tensor: Tensor) -> list[Any]:
    """The tensor's elements as a flat JSON list (decoded from its raw bytes if need be);
    BYTES elements as strings (UTF-8; bytes that are not are decoded with replacement)."""
    if tensor.data is not None:
        return tensor.data
    if tensor.raw is None:
        return []
    if tensor.datatype == BYTES:
        return [e.decode("utf-8", "replace") for e in unpack_bytes(tensor.raw)]
    code = _STRUCT_CODES[tensor.datatype]
    return list(struct.unpack(f"<{len(tensor.raw) // tensor.item_size}{code}", tensor.raw))


def _split(body: bytes, header_length: str | None, loads: Loads) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, rest = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise V2Error("Inference-Header-Content-Length must be a whole number.") from None
        if not 0 < length <= len(body):
            raise V2Error("Inference-Header-Content-Length is outside the body.")
        json_part, rest = body[:length], body[length:]
    try:
        header = loads(json_part)
    except (ValueError, UnicodeDecodeError) as exc:
        raise V2Error(f"the inference header is not valid JSON: {exc}.") from None
    if not isinstance(header, dict):
        raise V2Error("the inference header must be a JSON object.")
    return header, rest


def _tensors(specs: list[Any], rest: bytes, role: str) -> list[Tensor]:
    tensors = []
    offset = 0
    for spec in specs:
        tensor = _tensor(spec, role)
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise V2Error(f"{role} '{tensor.name}': binary_data_size runs past the body.")
            tensor.raw = rest[offset : offset + size]
            offset += size
            check_raw(tensor, role)
        elif tensor.data is None:
            raise V2Error(f"{role} '{tensor.name}' has neither 'data' nor binary_data_size.")
        tensors.append(tensor)
    if offset != len(rest):
        raise V2Error(f"{len(rest) - offset} bytes after the last binary {role}.")
    return tensors


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major values of a flat or nested list."""
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _tensor(spec: Any, role: str) -> Tensor:
    if not isinstance(spec, dict):
        raise V2Error(f"each {role} must be an object.")
    name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
    if not isinstance(name, str) or not name:
        raise V2Error(f"an {role} needs a 'name'.")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise V2Error(f"{role} '{name}': 'shape' must be a list of non-negative integers.")
    if not isinstance(datatype, str) or (datatype not in ITEM_SIZES and datatype != BYTES):
        known = ", ".join([*ITEM_SIZES, BYTES])  # (a list datatype is unhashable: str first)
        raise V2Error(f"{role} '{name}': datatype '{datatype}' is not one of {known}.")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise V2Error(f"{role} '{name}': 'parameters' must be an object.")
    data = spec.get("data")
    if data is not None and not isinstance(data, list):
        raise V2Error(f"{role} '{name}': 'data' must be a list.")
    return Tensor(name, list(shape), datatype, None, data, parameters)


def check_raw(tensor: Tensor, role: str) -> None:
    """V2Error unless a raw tensor's bytes fit its shape and datatype (BYTES: every
    element's length prefix inside the data, as many elements as the shape)."""
    assert tensor.raw is not None
    if tensor.datatype == BYTES:
        _check_bytes(tensor, role)
        return
    expected = tensor.elements * tensor.item_size
    if len(tensor.raw) != expected:
        raise V2Error(
            f"{role} '{tensor.name}': {len(tensor.raw)} bytes for shape {tensor.shape} of "
            f"{tensor.datatype}, which needs {expected}."
        )


def _check_bytes(tensor: Tensor, role: str) -> None:
    """Every element's length prefix within the data, and as many elements as the shape."""
    raw = tensor.raw
    assert raw is not None
    offset = count = 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise V2Error(f"{role} '{tensor.name}': a BYTES length prefix is cut short.")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size + length
        if offset > len(raw):
            raise V2Error(
                f"{role} '{tensor.name}': a BYTES element's length ({length}) runs past its data."
            )
        count += 1
    if count != tensor.elements:
        raise V2Error(
            f"{role} '{tensor.name}': {count} BYTES elements for shape {tensor.shape}, which "
            f"needs {tensor.elements}."
        )
