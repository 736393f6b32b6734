"""The batch contract between the proxy and an upstream model server, written once.

Both sides import this module; it needs nothing but the standard library, so a
user writing their own upstream can copy it.

Request  POST /predict/batch   {"inputs": [item, ...]}            (1 to the server's limit)
Reply    200                   {"outputs": [out, ...],            one per input, in order
                                "errors": {"3": "why", ...},      optional: failed items
                                "model": {...}}                   who answered
Status   400 body not JSON · 413 batch over the limit · 422 not {"inputs": [...]} or empty
         401 missing or wrong token · 500 the model's worker died or hung on this batch
         503 not ready; any non-200 fails the whole batch.

Per-item failures are signalled only by `errors` (index as a string, then one
sentence). `outputs[i]` of a failed item holds `{"error": why}` for readers of
the first contract, but an output is never judged by its keys: a model whose
real output is `{"error": ...}` is a success unless its index is in `errors`.

GET /health answers 200 `{"status": "ok"}` while the server is alive, with the
header `X-Nexus-Max-Concurrent-Batches: N`: how many batches it runs at once
(an upstream that does not say is taken to run one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nexus_common.errors import WireError as WireError  # (its users name it wire.WireError)

BATCH_PATH = "/predict/batch"
HEALTH_PATH = "/health"
READY_PATH = "/ready"  # 200 once a version is loaded and answering
CONTENT_TYPE = "application/json"
CONCURRENCY_HEADER = "x-nexus-max-concurrent-batches"

OK = 200
BAD_JSON = 400
UNAUTHORIZED = 401
TOO_LARGE = 413
INVALID = 422
BATCH_FAILED = 500
NOT_READY = 503


@dataclass(frozen=True, slots=True)
class BatchReply:
    """One upstream answer: an output per input, the failed indices, who answered."""

    outputs: Sequence[Any]
    errors: Mapping[int, str] = field(default_factory=dict)
    model: Any = None


def encode_request(raw_items: Sequence[bytes]) -> bytes:
    """The request body from items that are already JSON text (the proxy never re-parses)."""
    return b'{"inputs":[' + b",".join(raw_items) + b"]}"


def check_request(body: Any, max_batch: int) -> list[Any]:
    """The items of a parsed request body, or WireError naming what is wrong."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list):
        raise WireError(INVALID, 'the body must be {"inputs": [item, ...]}.')
    if not inputs:
        raise WireError(INVALID, "'inputs' is empty; send at least one item.")
    if len(inputs) > max_batch:
        raise WireError(
            TOO_LARGE,
            f"the batch has {len(inputs)} items; the limit is {max_batch} (NEXUS_MAX_BATCH).",
        )
    return inputs


def reply_body(outputs: Sequence[Any], errors: Mapping[int, str], model: Any) -> dict[str, Any]:
    """The reply to serialise; failed items also carry `{"error": ...}` at their index."""
    shown = list(outputs)
    for index, message in errors.items():
        shown[index] = {"error": message}
    body: dict[str, Any] = {"outputs": shown, "model": model}
    if errors:
        body["errors"] = {str(index): message for index, message in errors.items()}
    return body


def check_reply(reply: Any) -> BatchReply:
    """A parsed reply as a BatchReply, or WireError: no outputs list, malformed errors.

    That there is one output per input is the caller's check: it knows what it sent.
    """
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if not isinstance(outputs, list):
        raise WireError(OK, "a reply without an 'outputs' list")
    expected = len(outputs)
    raw_errors = reply.get("errors") or {}
    if not isinstance(raw_errors, dict):
        raise WireError(OK, "'errors' that is not an object of index to message")
    errors: dict[int, str] = {}
    for key, message in raw_errors.items():
        try:
            index = int(key)
        except ValueError:
            index = -1
        if not 0 <= index < expected:
            raise WireError(OK, f"an error for index {key!r}, outside the batch")
        errors[index] = str(message)
    return BatchReply(outputs=outputs, errors=errors, model=reply.get("model"))


def concurrency_of(headers: Mapping[str, str]) -> int:
    """How many batches an upstream runs at once, from its /health headers (1 if unsaid)."""
    try:
        value = int(headers.get(CONCURRENCY_HEADER, "1"))
    except ValueError:
        return 1
    return max(1, value)
