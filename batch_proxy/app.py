"""The proxy's HTTP face: a bare ASGI app (FastAPI would cost ~3x per request here).

`nexus-proxy` answers predictions without it, inside the HTTP protocol (fast_predict.py),
on the checks defined here and the answers of answers.py; the app answers them whenever
it is served otherwise, and everything else always.

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
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from batch_proxy import v2batch
from batch_proxy.admission import RELOAD_INTERVAL_S, Admission, presented_key
from batch_proxy.answers import (
    Headers,
    Receive,
    Refusal,
    Scope,
    Send,
    answered,
    not_allowed,
    refusal_of,
    refuse,
    respond,
    respond_raw,
    timed_out,
    too_large,
)
from batch_proxy.batcher import Pending
from batch_proxy.discovery import Resolver, system_resolver
from batch_proxy.errors import BatchError, BodyTooLarge, ClientGone, UnknownModel
from batch_proxy.metrics import ProxyMetrics
from batch_proxy.request_cycle import DisconnectWatcher, priority_level, read_body
from batch_proxy.routing import Router
from batch_proxy.settings import ProxySettings
from batch_proxy.signatures import Signatures
from nexus_common import v2wire, wire
from nexus_common.memory import trim_when_idle
from nexus_common.signature import check_request
from nexus_common.slow_clients import CONNECTION

logger = logging.getLogger("nexus.proxy")


class ProxyApp:
    """ASGI application; the batcher and upstream pool live in its lifespan."""

    def __init__(self, settings: ProxySettings, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.router = Router(settings, resolver=resolver)
        # the models' signatures, so a v2 request that does not fit is refused before batching
        self.signatures = Signatures(lambda model: self.router.pool_for(model).get)
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
        self._grpc: Any = None  # the gRPC frontend's server, with --grpc-port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def startup(self) -> None:
        await self.router.start()
        if self.settings.grpc_port is not None:
            from batch_proxy import grpc_frontend

            self._grpc = await grpc_frontend.start(self)
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
        if self._grpc is not None:
            await self._grpc.stop(grace_s=self.settings.request_timeout_s)
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
                await not_allowed(send, method, path, "POST")
                return
            if self.admission is not None and not await self._admit(scope, send):
                return
            status = await self._predict(model, scope, receive, send)
            if status:
                self.metrics.request_done(status)
        elif path in ("/health", "/ready", "/metrics", "/openapi.json"):
            if method not in ("GET", "HEAD"):
                await not_allowed(send, method, path, "GET, HEAD")
            elif path == "/openapi.json":
                await respond_raw(send, 200, openapi_document(self.settings.priority_levels))
            else:
                await self._probe(path, send)
        elif path.startswith("/v2"):
            await self._v2(scope, path, method, receive, send)
        else:
            await respond(send, 404, {"error": f"no route {method} {path}."})

    async def _admit(self, scope: Scope, send: Send) -> bool:
        """Check the request's key and rate before anything is read or queued."""
        refusal = self.admit(scope["headers"])
        if refusal is None:
            return True
        self.metrics.request_done(await refuse(send, refusal))
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
            await respond(send, status, payload)
            return status
        if path == wire.READY_PATH:
            ready = self.router.ready()
            if all(ready.values()):
                await respond(send, 200, {"status": "ready", "models": ready})
                return 200
            down = ", ".join(sorted(m for m, ok in ready.items() if not ok))
            await respond(send, 503, {"error": f"no healthy upstream for {down}.", "models": ready})
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
            return await refuse(send, priority)
        body = await self._body(receive, send)
        if isinstance(body, int):
            return body
        item = self.predict_submit(model, priority, body, _connection(scope))
        if isinstance(item, Refusal):
            return await refuse(send, item)
        return await self._await_answer(item, receive, send)

    def predict_head(self, model: str | None, headers: Headers) -> int | Refusal:
        """What a prediction's headers decide before its body is read: the model exists
        (404), the priority level (400). Shared with the protocol's fast path (fast_predict)."""
        try:
            if model is not None:
                self.router.pool_for(model)
            return priority_level(_header_of(headers, b"x-priority"), self.settings.priority_levels)
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
            await not_allowed(send, method, path, "POST")
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
            await not_allowed(send, method, path, "GET, HEAD")
        elif path == "/v2":
            await respond(
                send, 200, {"name": "nexusml-proxy", "extensions": ["binary_tensor_data"]}
            )
        elif path == "/v2/health/live":
            await respond(send, 200, {"live": True})
        elif path == "/v2/health/ready":
            ready = all(self.router.ready().values())
            await respond(send, 200 if ready else 503, {"ready": ready})
        elif len(parts) in (4, 5) and parts[2] == "models":
            try:
                pool = self.router.pool_for(parts[3])
            except UnknownModel as exc:
                await respond(send, 404, {"error": str(exc)})
                return
            status, body = await pool.get(path)
            await respond_raw(send, status, body)
        else:
            await respond(send, 404, {"error": f"no route {method} {path}."})

    async def _body(self, receive: Receive, send: Send) -> bytes | int:
        """The request body; or the status already answered (413, or 0: the client left)."""
        try:
            return await read_body(receive, self.settings.max_body_bytes)
        except BodyTooLarge:
            return await refuse(send, too_large(self.settings.max_body_bytes))
        except ClientGone:
            return 0

    async def queue_v2(
        self,
        model: str,
        request: v2wire.InferRequest,
        asked_priority: object,
        *,
        within_s: float | None = None,
        connection: Any = None,
    ) -> Pending:
        """Queue a parsed v2 request (HTTP or gRPC: they share queues and batches) after
        the checks; `within_s` caps its wait (a gRPC deadline). V2Error, UnknownModel or
        BatchError when refused."""
        group, rows = v2batch.stack_key(model, request)
        max_rows = self.settings.max_batch_size
        if rows > max_rows:
            raise v2wire.V2Error(f"at most {max_rows} rows a request; this one has {rows}.")
        self.router.pool_for(model)
        priority = priority_level(asked_priority, self.settings.priority_levels)
        timeout = self.settings.timeout_s(priority)
        if within_s is not None:
            timeout = min(timeout, within_s)
        queue = self.router.v2_queue(group)
        problem = await self._misfit(model, request)
        if problem is not None:
            raise v2wire.V2Error(problem)
        return queue.submit(request, timeout, size=rows, priority=priority, connection=connection)

    async def _v2_infer(self, model: str, scope: Scope, receive: Receive, send: Send) -> int:
        body = await self._body(receive, send)
        if isinstance(body, int):
            return body
        length = _header_of(scope["headers"], b"inference-header-content-length")
        try:
            request = v2wire.parse_request(body, length, orjson.loads)
            asked = request.parameters.get("priority")
            asked = asked or _header_of(scope["headers"], b"x-priority")
            item = await self.queue_v2(model, request, asked, connection=_connection(scope))
        except v2wire.V2Error as exc:
            return await respond(send, 400, {"error": str(exc)})
        except UnknownModel as exc:
            return await respond(send, 404, {"error": str(exc)})
        except BatchError as exc:
            return await refuse(send, refusal_of(exc))
        answer = await self._answer_of(item, receive, send)
        if isinstance(answer, int):
            return answer
        outputs, info = answer
        wanted = {o.get("name") for o in request.outputs}
        missing = wanted - {t.name for t in outputs}
        if missing:
            names = ", ".join(sorted(map(str, missing)))
            return await respond(send, 400, {"error": f"the model has no output {names}."})
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

    async def _misfit(self, model: str, request: v2wire.InferRequest) -> str | None:
        """What keeps a v2 request from fitting the model's signature, checked before it is
        batched (None: it fits, or the signature is not known here)."""
        expected = await self.signatures.of(model)
        if expected is None:
            return None
        inputs = [(t.name, t.datatype, t.shape) for t in request.inputs]
        return check_request(expected, inputs, (str(o.get("name")) for o in request.outputs))

    async def _await_answer(self, item: Pending, receive: Receive, send: Send) -> int:
        answer = await self._answer_of(item, receive, send)
        if isinstance(answer, int):
            return answer
        output, model = answer
        return await respond(send, 200, answered(output, model))

    async def _answer_of(
        self, item: Pending, receive: Receive, send: Send
    ) -> tuple[Any, Any] | int:
        """The item's (output, model); or, when it failed, the status already answered
        (0: the client left first)."""
        # Most answers come within a few batch times, so the disconnect watcher (a task per
        # request, a fifth of the proxy's per-request cost) starts only once an item waits.
        watcher = DisconnectWatcher(receive, item)
        timeout = item.deadline - item.enqueued  # the request's own (its priority's)
        try:
            async with asyncio.timeout(timeout):
                output, model = await item.future
        except TimeoutError:
            return await refuse(send, timed_out(timeout))
        except BatchError as exc:
            return await refuse(send, refusal_of(exc))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled, not just the item
            return 0  # the client disconnected; its item was dropped from the queue
        finally:
            watcher.cancel()
        return output, model


_V2_INFER = "/infer"


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
