"""The HTTP face of a `ModelService`: thin routes, one place that reads bodies.

    POST /predict/batch  {"inputs": [item, ...]} -> the wire reply (nexus_common/wire.py)
    POST /predict        item -> {"output": ..., "model": {...}}, or 422 {"error": ...}
    POST /models/{name}/predict[/batch]   the same for one of several models (--models)
    GET  /health /ready /model /models/{name} /metrics
    /v2/...              the Open Inference Protocol, JSON and binary (model_server/v2.py)
    GET  /deployment     the rollout event log (?since=SEQ for the events after one; ?model=)
    POST /admin/reload   check the followed ref now (Bearer NEXUS_ADMIN_TOKEN; off without one)

Bodies are parsed with orjson and checked by the wire module's `check_request`,
the same code the contract documents; see docs/decisions.md for why not pydantic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from control_plane import NexusError
from model_server import openapi_docs as docs
from model_server import v2
from model_server.body_limit import BodyLimit
from model_server.errors import NotReadyError, WorkerFailedError
from model_server.hosting import Hosted, Models
from model_server.responses import bearer_matches, json_response, token_guard
from model_server.service import ModelService, load_model
from model_server.settings import ServerSettings
from nexus_common import wire

logger = logging.getLogger("nexus.model_server")

__all__ = ["create_app", "load_model"]


def create_app(
    settings: ServerSettings, *, on_fatal: Callable[[NexusError], None] | None = None
) -> FastAPI:
    """The app; `on_fatal` is called if a model cannot be loaded (the CLI stops the server)."""
    models = Models(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await models.start(on_fatal)
        grpc_server = None
        if settings.grpc_port is not None:
            from model_server import grpc_service

            grpc_server = await grpc_service.start(
                models, settings.host, settings.grpc_port, settings.server_token
            )
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace_s=5)
            await models.stop()

    app = FastAPI(title="NexusML model server", lifespan=lifespan)
    app.state.models = models
    guard = token_guard(settings.server_token)
    app.state.guard = guard
    app.state.max_batch_size = settings.max_batch  # /v2/models/{name}/config says it
    _prediction_routes(app, models, guard)
    app.include_router(v2.router)
    _probe_routes(app, models)
    _delivery_routes(app, models, settings.admin_token)
    _error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def _prediction_routes(
    app: FastAPI, models: Models, guard: Callable[[Request], Response | None]
) -> None:
    def route(
        path: str,
        handler: Callable[[ModelService, Any], Awaitable[Response]],
        body: dict[str, Any],
    ) -> None:
        """POST `path` (and `/models/{name}` + `path`): the body parsed once, expected failures
        answered, every status counted."""

        async def endpoint(request: Request) -> Response:
            name = request.path_params.get("name")
            hosted = models.default if name is None else models.find(name)
            if hosted is None:
                served = ", ".join(models.names())
                return json_response(
                    {"error": f"no model '{name}' here (it serves {served})."}, 404
                )
            service = hosted.service
            try:
                refused = guard(request)
                if refused is not None:
                    response = refused
                else:
                    response = await handler(service, _parse(await request.body()))
            except wire.WireError as exc:
                response = json_response({"error": exc.message}, exc.status)
            except NotReadyError as exc:
                response = json_response({"error": exc.message}, wire.NOT_READY)
            except WorkerFailedError as exc:
                response = json_response({"error": exc.message}, wire.BATCH_FAILED)
            service.metrics.requests.labels(path, str(response.status_code)).inc()
            return response

        for route_path, extra in ((path, body), ("/models/{name}" + path, docs.named(body))):
            app.add_api_route(
                route_path,
                endpoint,
                methods=["POST"],
                responses=docs.PREDICTION_ERRORS,
                openapi_extra=extra,
            )

    async def batch(service: ModelService, body: Any) -> Response:
        service.require_ready()
        items = wire.check_request(body, service.settings.max_batch)
        return json_response((await service.predict(items)).body())

    async def one(service: ModelService, body: Any) -> Response:
        result = await service.predict([body])
        if 0 in result.errors:
            return json_response({"error": result.errors[0], "model": result.model}, 422)
        return json_response({"output": result.outputs[0], "model": result.model})

    route(wire.BATCH_PATH, batch, docs.BATCH_BODY)
    route("/predict", one, docs.ITEM_BODY)


def _probe_routes(app: FastAPI, models: Models) -> None:
    @app.get(wire.HEALTH_PATH, responses=docs.errors(503))
    async def health() -> Response:
        """200 while every background task runs; 503 naming one that crashed until its
        restart holds (an orchestrator restarts a server that does not recover)."""
        status, payload = models.health()
        response = json_response(payload, status)
        concurrency = models.default.service.max_concurrent_batches
        response.headers[wire.CONCURRENCY_HEADER] = str(concurrency)
        return response

    @app.get(wire.READY_PATH, responses=docs.errors(503))
    async def ready() -> Response:
        if not models.several:
            version = models.default.service.require_ready()
            return json_response({"status": "ready", "model": version.info})
        states = {
            h.name or "": h.service.serving.info if h.service.serving else h.service.not_ready
            for h in models.hosted
        }
        waiting = [h for h in models.hosted if h.service.serving is None]
        if waiting:
            why = "; ".join(f"{h.name}: {h.service.not_ready}" for h in waiting)
            return json_response({"error": f"not ready: {why}", "models": states}, 503)
        return json_response({"status": "ready", "models": states})

    @app.get("/model", responses=docs.errors(503))
    async def model() -> Response:
        return _describe(models.default)

    @app.get("/models/{name}", responses=docs.errors(404, 503))
    async def named_model(name: str) -> Response:
        hosted = models.find(name)
        if hosted is None:
            return json_response({"error": f"no model '{name}' here."}, 404)
        return _describe(hosted)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text", "content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        return Response(models.render_metrics(), media_type=CONTENT_TYPE_LATEST)


def _describe(hosted: Hosted) -> Response:
    service = hosted.service
    rollout: dict[str, Any] = hosted.rollout.status() if hosted.rollout else {}
    if service.serving is None:
        return json_response({"error": service.not_ready, "rollout": rollout}, 503)
    return json_response({**service.describe(), "rollout": rollout})


def _delivery_routes(app: FastAPI, models: Models, admin_token: str | None) -> None:
    @app.get("/deployment", responses=docs.errors(400, 404))
    async def deployment(request: Request, since: int = 0, model: str | None = None) -> Response:
        repeated = [k for k in ("since", "model") if len(request.query_params.getlist(k)) > 1]
        if repeated:  # which one was meant? (FastAPI would take the last in silence)
            return json_response({"error": f"give ?{repeated[0]}= once."}, 400)
        hosted = models.default if model is None else models.find(model)
        if hosted is None or hosted.rollout is None:
            return json_response({"error": f"no model '{model}' here."}, 404)
        rollout = hosted.rollout
        return json_response({**rollout.status(), "events": rollout.events.since(since)})

    if not admin_token:
        return  # admin routes are off: 404 like any unknown path

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        if not bearer_matches(request, admin_token):
            return json_response({"error": "missing or wrong admin token (Bearer)."}, 401)
        answers = [await h.rollout.reload() for h in models.hosted if h.rollout is not None]
        return json_response(answers[0] if not models.several else {"models": answers})


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> Response:
        return json_response({"error": exc.message}, wire.NOT_READY)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = json_response({"error": str(exc.detail)}, exc.status_code)
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return json_response({"error": "the request is not valid.", "details": exc.errors()}, 422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody reads this answer: the client hung up (or was cut off for sending too
        # slowly) before its body arrived. Not an error of ours, so no traceback.
        return json_response({"error": "the client disconnected."}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s", request.url.path)
        return json_response({"error": "internal error; see the server log."}, 500)


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise wire.WireError(wire.BAD_JSON, f"the request body is not valid JSON: {exc}.") from None
