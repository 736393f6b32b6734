"""The proxy's answers: one definition of each, shared by the ASGI app and the fast path
(`fast_predict.py`), so both ways of serving a request write the same bytes.

A prediction's answer is `answered`; anything else is a `Refusal` (its status, its JSON,
and whether it says when to retry); `respond` writes a JSON answer through ASGI.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from batch_proxy.errors import BatchError, ItemError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def not_allowed(send: Send, method: str, path: str, allowed: str) -> int:
    body = orjson.dumps({"error": f"{method} is not allowed on {path}; use {allowed}."})
    headers = [*response_headers(405, body), (b"allow", allowed.encode())]
    await send({"type": "http.response.start", "status": 405, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return 405


async def respond_raw(send: Send, status: int, body: bytes) -> int:
    headers = response_headers(status, body)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer other than the model's output: its status, its JSON, and `retry_after`:
    True for a 503 or a full queue's 429 (one second), or the seconds a rate-limited 429
    should wait."""

    status: int
    payload: dict[str, Any]
    retry_after: bool | float = False


def refusal_of(exc: BatchError) -> Refusal:
    """How a failed item is answered (an item the model failed names the model)."""
    if isinstance(exc, ItemError):
        return Refusal(exc.status, {"error": exc.message, "model": exc.model})
    return Refusal(exc.status, {"error": exc.message}, retry_after=True)


def timed_out(timeout_s: float) -> Refusal:
    return Refusal(504, {"error": f"no answer within {timeout_s:g} s."})


def too_large(limit: int) -> Refusal:
    return Refusal(413, {"error": f"the body is over {limit} bytes."})


def answered(output: Any, model: Any) -> dict[str, Any]:
    """A prediction's answer: the model's output for this item and who answered."""
    return {"output": output, "model": model}


def response_headers(
    status: int, body: bytes, retry_after: bool | float = False
) -> list[tuple[bytes, bytes]]:
    """A JSON answer's headers (Retry-After rounded up to whole seconds, as it takes)."""
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if retry_after is True and status in (429, 503):
        headers.append((b"retry-after", b"1"))
    elif retry_after is not True and retry_after:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    return headers


async def refuse(send: Send, refusal: Refusal) -> int:
    return await respond(send, refusal.status, refusal.payload, retry_after=refusal.retry_after)


async def respond(
    send: Send, status: int, payload: dict[str, Any], *, retry_after: bool | float = False
) -> int:
    body = orjson.dumps(payload)
    headers = response_headers(status, body, retry_after)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status
