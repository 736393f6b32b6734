"""Batching Open Inference Protocol requests: concatenated along the first dimension as
bytes, sent upstream as one binary request, the outputs sliced back per caller.

Requests batch together only when every input has the same name, datatype and shape
past the first dimension (their `StackKey`); each key has its own queue, so
tensors that cannot be stacked are never mixed. No tensor is decoded: JSON inputs are
packed to bytes once, binary ones are joined as they came; BYTES elements keep their
length prefixes, and an output's rows are found by walking them.
"""

from __future__ import annotations

from dataclasses import dataclass

from batch_proxy.batcher import Pending, Slot, Transport
from batch_proxy.errors import UpstreamError
from nexus_common import v2wire
from nexus_common.v2wire import BINARY_CONTENT_TYPE, HEADER_LENGTH, InferRequest, Tensor, V2Error
from nexus_common.wire import BatchReply


@dataclass(frozen=True)
class StackKey:
    """What requests must share to be stacked: the model and each input's name, datatype
    and shape past the batch dimension."""

    model: str
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]


def stack_key(model: str, request: InferRequest) -> tuple[StackKey, int]:
    """The request's stack key and its rows (the first dimension every input shares)."""
    rows = None
    parts = []
    for tensor in request.inputs:
        if not tensor.shape:
            raise V2Error(f"input '{tensor.name}' has no batch dimension to batch along.")
        if rows is None:
            rows = tensor.shape[0]
        elif tensor.shape[0] != rows:
            raise V2Error("every input must have the same first (batch) dimension.")
        parts.append((tensor.name, tensor.datatype, tuple(tensor.shape[1:])))
        v2wire.to_raw(tensor)  # JSON data packed once, here, with its errors the caller's
    if not rows:
        raise V2Error("the batch dimension must be at least 1.")
    return StackKey(model, tuple(sorted(parts))), rows


def transport(model: str) -> Transport:
    """Send a batch of v2 requests for `model` as one binary request; one list of output
    tensors per caller comes back."""
    path = f"/v2/models/{model}/infer"

    async def send(slot: Slot, batch: list[Pending]) -> BatchReply:
        requests: list[InferRequest] = [item.payload for item in batch]
        body, header_length = v2wire.encode_request(combine(requests), {"binary_data_output": True})
        headers = {HEADER_LENGTH: str(header_length), "content-type": BINARY_CONTENT_TYPE}
        data, reply_headers = await slot.exchange(path, body, headers)
        try:
            header, outputs = v2wire.parse_response(data, reply_headers.get(HEADER_LENGTH))
        except V2Error as exc:
            raise UpstreamError(f"the upstream's v2 reply is not valid: {exc}") from None
        per_caller = split(outputs, [item.size for item in batch])
        info = {"name": header.get("model_name", model), "version": header.get("model_version")}
        return BatchReply(per_caller, {}, info)

    return send


def combine(requests: list[InferRequest]) -> list[Tensor]:
    """Each input of the batch: the callers' bytes joined, in the order of `requests`."""
    first = requests[0]
    rows = sum(r.inputs[0].shape[0] for r in requests)
    combined = []
    for tensor in first.inputs:
        parts = [v2wire.to_raw(_named(r, tensor.name)) for r in requests]
        combined.append(
            Tensor(tensor.name, [rows, *tensor.shape[1:]], tensor.datatype, b"".join(parts))
        )
    return combined


def split(outputs: list[Tensor], sizes: list[int]) -> list[list[Tensor]]:
    """Each caller's rows of every output (BYTES rows found by walking their elements)."""
    total = sum(sizes)
    per_caller: list[list[Tensor]] = [[] for _ in sizes]
    for tensor in outputs:
        if not tensor.shape or tensor.shape[0] != total:
            raise UpstreamError(
                f"the upstream's output '{tensor.name}' has shape {tensor.shape}; a batch of "
                f"{total} rows needs {total} first."
            )
        raw = v2wire.to_raw(tensor)
        offsets = tensor.row_offsets()
        row = 0
        for index, size in enumerate(sizes):
            part = raw[offsets[row] : offsets[row + size]]
            per_caller[index].append(
                Tensor(tensor.name, [size, *tensor.shape[1:]], tensor.datatype, part)
            )
            row += size
    return per_caller


def _named(request: InferRequest, name: str) -> Tensor:
    return next(t for t in request.inputs if t.name == name)
