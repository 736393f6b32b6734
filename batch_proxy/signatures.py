"""The models' signatures as their upstreams describe them, so the proxy refuses a v2
request that does not fit (a wrong input name, datatype or shape, an output the model does
not return) before it is batched: one sentence naming the tensor, the model server's own
(`nexus_common.signature.check_request`), and no upstream round trip.

A signature is fetched once per model from an upstream's `GET /v2/models/{name}`, only when
the server says it knows it (`parameters.signature == "known"`: recorded at store, an ONNX
graph's, or learned at load), and kept `TTL_S`; an older one is refreshed in the background
while requests go on being checked against it. Where none is known, or no upstream
answers, requests pass unchecked and the model server checks them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from nexus_common.errors import NexusError
from nexus_common.signature import Signature

logger = logging.getLogger("nexus.proxy")

TTL_S = 5.0
Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]  # path -> (status, body)


class Signatures:
    def __init__(self, fetch_for: Callable[[str], Fetch], ttl_s: float = TTL_S) -> None:
        self._fetch_for = fetch_for
        self._ttl_s = ttl_s
        self._known: dict[str, tuple[float, Signature | None]] = {}
        self._pending: dict[str, asyncio.Task[Signature | None]] = {}

    async def of(self, model: str) -> Signature | None:
        """The model's signature (None: not known); waits only for a model's first fetch."""
        known = self._known.get(model)
        if known is None:
            return await asyncio.shield(self._start(model))
        fetched, signature = known
        if time.monotonic() - fetched > self._ttl_s:
            self._start(model)  # in the background; this request uses the one known
        return signature

    def _start(self, model: str) -> asyncio.Task[Signature | None]:
        pending = self._pending.get(model)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._fetch(model))
            self._pending[model] = pending
            pending.add_done_callback(lambda _: self._pending.pop(model, None))
        return pending

    async def _fetch(self, model: str) -> Signature | None:
        signature: Signature | None = None
        try:
            status, body = await self._fetch_for(model)(f"/v2/models/{model}")
            if status == 200:
                signature = _known_signature(orjson.loads(body), model)
        except (ValueError, NexusError) as exc:  # no upstream for it, or not metadata
            logger.warning("the metadata of model '%s' is not usable: %s", model, exc)
        self._known[model] = (time.monotonic(), signature)
        return signature


def _known_signature(metadata: Any, model: str) -> Signature | None:
    if not isinstance(metadata, dict):
        return None
    if (metadata.get("parameters") or {}).get("signature") != "known":
        return None
    raw = {"inputs": metadata.get("inputs"), "outputs": metadata.get("outputs") or []}
    return Signature.from_json(raw, f"model '{model}''s metadata")
