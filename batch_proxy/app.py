"""The proxy's HTTP face: a bare ASGI app (FastAPI would cost ~3x per request here).

`nexus-proxy` answers predictions without it, inside the HTTP protocol (fast_predict.py),
on the checks and answers defined here; the app answers them whenever it is served
otherwise, and everything else always.

POST /predict   one JSON item -> {"output": ..., "model": ...} (with --api-keys: a key, a rate)
POST /models/{name}/predict   the same for one of several models (batching/routing.py)
POST /v2/models/{name}/infer   the Open Inference Protocol, JSON or binary tensors, batched
                along the first dimension (batch_proxy/v2batch.py); GET /v2, /v2/health/*,
                /v2/models/{name}[/ready] (the last two asked of an upstream)
GET  /health    alive
GET  /ready     at least one healthy upstream
GET  /metrics   Prometheus text
GET  /openapi.json   this API, written by hand (batch_proxy/openapi.json)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from batch_proxy import v2batch, v2wire, wire
from batch_proxy.admission import RELOAD_INTERVAL_S, Admission, presented_key
from batch_proxy.batcher import BatchError, ItemError, Pending
from batch_proxy.discovery import Resolver, system_resolver
from batch_proxy.memory import trim_when_idle
from batch_proxy.metrics import ProxyMetrics
from batch_proxy.routing import Router, UnknownModel
from batch_proxy.settings import ProxySettings
from batch_proxy.slow_clients import CONNECTION

logger = logging.getLogger("nexus.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class ProxyApp:
    """ASGI application; the batcher and upstream pool live in its lifespan."""

    def __init__(self, settings: ProxySettings, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.router = Router(settings, resolver=resolver)
        self.pool = self.router.pools[self.router.default_model]
        self.batcher = self.router.default
        self.metrics = ProxyMetrics(
            queue_depth=lambda: self.router.queue_depth,
            inflight=lambda: self.router.inflight,
            ready_upstreams=lambda: self.router.ready_upstreams,
            policy=self.router.default_policy,
        )
        self.router.set_observer(self.metrics)
        self.admission = Admission(settings.api_keys) if settings.api_keys else None
        self.requests = 0  # received, ever: tells the memory trimmer a burst happened

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def startup(self) -> None:
        await self.router.start()
        supervisor = self.router.supervisor
        supervisor.start("memory-trimmer", self._trim_when_idle)
        if self.admission is not None:
            supervisor.start("key-reload", self._reload_keys)

    async def _trim_when_idle(self) -> None:
        await trim_when_idle(
            lambda: self.requests, lambda: self.router.queue_depth + self.router.inflight
        )

    async def _reload_keys(self) -> None:
        assert self.admission is not None
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            self.admission.reload()

    async def shutdown(self) -> None:
        await self.router.stop(drain_timeout_s=self.settings.request_timeout_s)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        path, method = scope["path"], scope["method"]
        model = model_of(path)
        if path == "/predict" or model is not None:
            if method != "POST":
                await _not_allowed(send, method, path, "POST")
                return
            if self.admission is not None and not await self._admit(scope, send):
                return
            status = await self._predict(model, scope, receive, send)
            if status:
                self.metrics.request_done(status)
        elif path in ("/health", "/ready", "/metrics", "/openapi.json"):
            if method not in ("GET", "HEAD"):
                await _not_allowed(send, method, path, "GET, HEAD")
            elif path == "/openapi.json":
                await _respond_raw(send, 200, openapi_document(self.settings.priority_levels))
            else:
                await self._probe(path, send)
        elif path.startswith("/v2"):
            await self._v2(scope, path, method, receive, send)
        else:
            await _respond(send, 404, {"error": f"no route {method} {path}."})

    async def _admit(self, scope: Scope, send: Send) -> bool:
        """Check the request's key and rate before anything is read or queued."""
        refusal = self.admit(scope["headers"])
        if refusal is None:
            return True
        self.metrics.request_done(await _refuse(send, refusal))
        return False

    def admit(self, headers: Headers) -> Refusal | None:
        """The request's key and rate (None: let in), counted in the metrics."""
        assert self.admission is not None
        verdict = self.admission.admit(presented_key(headers), time.monotonic())
        self.metrics.admitted(verdict.key_name, verdict.status)
        if verdict.status == 200:
            return None
        if verdict.status == 401:
            return Refusal(
                401,
                {
                    "error": "a valid API key is needed: 'Authorization: Bearer <key>' or "
                    "'X-API-Key: <key>'."
                },
            )
        wait = verdict.retry_after_s
        return Refusal(
            429,
            {"error": f"key '{verdict.key_name}' is over its rate; retry in {wait:.2f} s."},
            retry_after=wait,
        )

    async def _probe(self, path: str, send: Send) -> int:
        if path == "/health":  # 503 while a background loop is down (being restarted)
            status, payload = self.router.supervisor.health()
            await _respond(send, status, payload)
            return status
        if path == wire.READY_PATH:
            ready = self.router.ready()
            if all(ready.values()):
                await _respond(send, 200, {"status": "ready", "models": ready})
                return 200
            down = ", ".join(sorted(m for m, ok in ready.items() if not ok))
            await _respond(
                send, 503, {"error": f"no healthy upstream for {down}.", "models": ready}
            )
            return 503
        body = self.metrics.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return 200

    async def _predict(self, model: str | None, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one item of `model` (None: the default); 0 means the client left before an
        answer could be sent."""
        priority = self.predict_head(model, scope["headers"])
        if isinstance(priority, Refusal):
            return await _refuse(send, priority)
        body = await self._body(receive, send)
        if isinstance(body, int):
            return body
        item = self.predict_submit(model, priority, body, _connection(scope))
        if isinstance(item, Refusal):
            return await _refuse(send, item)
        return await self._await_answer(item, receive, send)

    def predict_head(self, model: str | None, headers: Headers) -> int | Refusal:
        """What a prediction's headers decide before its body is read: the model exists
        (404), the priority level (400). Shared with the protocol's fast path (fast_predict)."""
        try:
            if model is not None:
                self.router.pool_for(model)
            return self._priority(_header_of(headers, b"x-priority"))
        except UnknownModel as exc:
            return Refusal(404, {"error": str(exc)})
        except ValueError as exc:
            return Refusal(400, {"error": str(exc)})

    def predict_submit(
        self, model: str | None, priority: int, body: bytes, connection: Any
    ) -> Pending | Refusal:
        """Queue one JSON item for `model`'s batches (or say why not)."""
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return Refusal(400, {"error": f"the request body is not valid JSON: {exc}."})
        try:
            timeout = self.settings.timeout_s(priority)
            queue = self.router.item_queue(model)  # not before the body: idle queues go
            return queue.submit(body, timeout, priority=priority, connection=connection)
        except BatchError as exc:
            return refusal_of(exc)

    async def _v2(self, scope: Scope, path: str, method: str, receive: Receive, send: Send) -> None:
        parts = path.rstrip("/").split("/")  # "", "v2", "models", name, ...
        infer = len(parts) == 5 and parts[2] == "models" and path.endswith(_V2_INFER)
        if infer and method != "POST":
            await _not_allowed(send, method, path, "POST")
            return
        if infer:
            if self.admission is not None and not await self._admit(scope, send):
                return
            status = await self._v2_infer(parts[3], scope, receive, send)
            if status:
                self.metrics.request_done(status)
            return
        known = path in ("/v2", "/v2/health/live", "/v2/health/ready") or (
            len(parts) in (4, 5) and parts[2] == "models"
        )
        if known and method not in ("GET", "HEAD"):
            await _not_allowed(send, method, path, "GET, HEAD")
        elif path == "/v2":
            await _respond(
                send, 200, {"name": "nexusml-proxy", "extensions": ["binary_tensor_data"]}
            )
        elif path == "/v2/health/live":
            await _respond(send, 200, {"live": True})
        elif path == "/v2/health/ready":
            ready = all(self.router.ready().values())
            await _respond(send, 200 if ready else 503, {"ready": ready})
        elif len(parts) in (4, 5) and parts[2] == "models":
            try:
                pool = self.router.pool_for(parts[3])
            except UnknownModel as exc:
                await _respond(send, 404, {"error": str(exc)})
                return
            status, body = await pool.get(path)
            await _respond_raw(send, status, body)
        else:
            await _respond(send, 404, {"error": f"no route {method} {path}."})

    def _priority(self, asked: object) -> int:
        """The level of a request's priority (1 = highest; none asked: the lowest)."""
        levels = self.settings.priority_levels
        if asked is None or asked == 0:  # 0: the v2 protocol's "default priority"
            return levels
        try:
            level = int(str(asked))
        except ValueError:
            level = 0
        if not 1 <= level <= levels:
            raise v2wire.V2Error(
                f"priority must be a whole number from 1 to {levels}, not {asked!r}."
            )
        return level

    async def _body(self, receive: Receive, send: Send) -> bytes | int:
        """The request body; or the status already answered (413, or 0: the client left)."""
        try:
            return await _read_body(receive, self.settings.max_body_bytes)
        except BodyTooLarge:
            return await _refuse(send, too_large(self.settings.max_body_bytes))
        except ClientGone:
            return 0

    async def _v2_infer(self, model: str, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._body(receive, send)
        if isinstance(body, int):
            return body
        length = _header_of(scope["headers"], b"inference-header-content-length")
        max_rows = self.settings.max_batch_size
        try:
            request = v2wire.parse_request(body, length, orjson.loads)
            group, rows = v2batch.signature(model, request)
            if rows > max_rows:
                raise v2wire.V2Error(f"at most {max_rows} rows a request; this one has {rows}.")
            self.router.pool_for(model)
            asked = request.parameters.get("priority")
            priority = self._priority(asked or _header_of(scope["headers"], b"x-priority"))
        except v2wire.V2Error as exc:
            return await _respond(send, 400, {"error": str(exc)})
        except UnknownModel as exc:
            return await _respond(send, 404, {"error": str(exc)})
        try:
            timeout = self.settings.timeout_s(priority)
            queue = self.router.v2_queue(group)
            item = queue.submit(
                request, timeout, size=rows, priority=priority, connection=_connection(scope)
            )
        except BatchError as exc:
            return await _refuse(send, refusal_of(exc))
        answer = await self._answer_of(item, receive, send)
        if isinstance(answer, int):
            return answer
        outputs, info = answer
        wanted = {o.get("name") for o in request.outputs}
        missing = wanted - {t.name for t in outputs}
        if missing:
            names = ", ".join(sorted(map(str, missing)))
            return await _respond(send, 400, {"error": f"the model has no output {names}."})
        chosen = [t for t in outputs if not wanted or t.name in wanted]
        payload, header_length = v2wire.encode_response(model, info.get("version"), chosen, request)
        headers = [(b"content-length", str(len(payload)).encode())]
        if header_length is None:
            headers.append((b"content-type", b"application/json"))
        else:
            headers.append((b"content-type", v2wire.BINARY_CONTENT_TYPE.encode()))
            headers.append((b"inference-header-content-length", str(header_length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return 200

    async def _await_answer(self, item: Pending, receive: Receive, send: Send) -> int:
        answer = await self._answer_of(item, receive, send)
        if isinstance(answer, int):
            return answer
        output, model = answer
        return await _respond(send, 200, answered(output, model))

    async def _answer_of(
        self, item: Pending, receive: Receive, send: Send
    ) -> tuple[Any, Any] | int:
        """The item's (output, model); or, when it failed, the status already answered
        (0: the client left first)."""
        # Most answers come within a few batch times, so the disconnect watcher (a task per
        # request, a fifth of the proxy's per-request cost) starts only once an item waits.
        watcher = _LazyWatcher(receive, item)
        timeout = item.deadline - item.enqueued  # the request's own (its priority's)
        try:
            async with asyncio.timeout(timeout):
                output, model = await item.future
        except TimeoutError:
            return await _refuse(send, timed_out(timeout))
        except BatchError as exc:
            return await _refuse(send, refusal_of(exc))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled, not just the item
            return 0  # the client disconnected; its item was dropped from the queue
        finally:
            watcher.cancel()
        return output, model


_V2_INFER = "/infer"


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


async def _cancel_on_disconnect(receive: Receive, item: Pending) -> None:
    """After the body, the only message left is http.disconnect: drop the item then."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            item.future.cancel()
            return


class _LazyWatcher:
    """Watches for the client going away, from `WATCH_AFTER_S` after the item was queued."""

    __slots__ = ("_handle", "_item", "_receive", "_task")

    def __init__(self, receive: Receive, item: Pending) -> None:
        self._receive, self._item = receive, item
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        if not self._item.future.done():
            self._task = asyncio.get_running_loop().create_task(
                _cancel_on_disconnect(self._receive, self._item)
            )

    def cancel(self) -> None:
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


WATCH_AFTER_S = 0.05


@functools.cache
def openapi_document(priority_levels: int) -> bytes:
    """The API's OpenAPI document (written by hand: there is no framework to derive it),
    with this proxy's number of priority levels as X-Priority's maximum."""
    document = orjson.loads((Path(__file__).parent / "openapi.json").read_bytes())
    document["components"]["parameters"]["Priority"]["schema"]["maximum"] = priority_levels
    return orjson.dumps(document)


def model_of(path: str) -> str | None:
    """`/models/{name}/predict` -> name; any other path -> None."""
    if path.startswith("/models/") and path.endswith("/predict"):
        name = path[len("/models/") : -len("/predict")]
        if name and "/" not in name:
            return name
    return None


def _connection(scope: Scope) -> Any:
    """The server's connection state for this request (see slow_clients.CONNECTION)."""
    extensions = scope.get("extensions")
    return extensions.get(CONNECTION) if extensions else None


def _header_of(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _not_allowed(send: Send, method: str, path: str, allowed: str) -> int:
    body = orjson.dumps({"error": f"{method} is not allowed on {path}; use {allowed}."})
    headers = [*response_headers(405, body), (b"allow", allowed.encode())]
    await send({"type": "http.response.start", "status": 405, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return 405


async def _respond_raw(send: Send, status: int, body: bytes) -> int:
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


async def _refuse(send: Send, refusal: Refusal) -> int:
    return await _respond(send, refusal.status, refusal.payload, retry_after=refusal.retry_after)


async def _respond(
    send: Send, status: int, payload: dict[str, Any], *, retry_after: bool | float = False
) -> int:
    body = orjson.dumps(payload)
    headers = response_headers(status, body, retry_after)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status
