"""The HTTP face of a `ModelService`: thin routes, one place that reads bodies.

    POST /predict/batch  {"inputs": [item, ...]} -> the wire reply (batch_proxy/wire.py)
    POST /predict        item -> {"output": ..., "model": {...}}, or 422 {"error": ...}
    GET  /health /ready /model /metrics
    /v2/...              the Open Inference Protocol, JSON and binary (model_server/v2.py)
    GET  /deployment     the rollout event log (?since=SEQ for the events after one)
    POST /admin/reload   check the followed ref now (Bearer NEXUS_ADMIN_TOKEN; off without one)

Bodies are parsed with orjson and checked by the wire module's `check_request`,
the same code the contract documents; see docs/decisions.md for why not pydantic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from batch_proxy import wire
from control_plane import NexusError
from model_server.delivery.rollout import Rollout
from model_server.service import ModelService, NotReadyError, load_model
from model_server.settings import ServerSettings
from model_server.v2 import add_v2_routes

logger = logging.getLogger("nexus.model_server")

__all__ = ["create_app", "load_model"]


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=wire.CONTENT_TYPE)


def create_app(
    settings: ServerSettings, *, on_fatal: Callable[[NexusError], None] | None = None
) -> FastAPI:
    """The app; `on_fatal` is called if the model cannot be loaded (the CLI stops the server)."""
    service = ModelService(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rollout = Rollout(service, settings, on_fatal)
        app.state.rollout = rollout
        task = asyncio.get_running_loop().create_task(rollout.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await rollout.stop()
            service.close()

    app = FastAPI(title="NexusML model server", lifespan=lifespan)
    app.state.nexus = service
    guard = token_guard(settings.server_token)
    _prediction_routes(app, service, guard)
    add_v2_routes(app, service, guard, json_response)
    _probe_routes(app, service)
    _delivery_routes(app, settings.admin_token)
    _error_handlers(app)
    return app


def token_guard(token: str | None) -> Callable[[Request], Response | None]:
    """The 401 for a caller without the server token (None: let it through)."""

    def guard(request: Request) -> Response | None:
        if token and not bearer_matches(request, token):
            refusal = "missing or wrong server token (Bearer): call through the proxy."
            return json_response({"error": refusal}, 401)
        return None

    return guard


def _prediction_routes(
    app: FastAPI, service: ModelService, guard: Callable[[Request], Response | None]
) -> None:
    def route(path: str, handler: Callable[[Any], Awaitable[Response]]) -> None:
        """POST `path`: the body parsed once, expected failures answered, every status counted."""

        async def endpoint(request: Request) -> Response:
            try:
                refused = guard(request)
                if refused is not None:
                    response = refused
                else:
                    response = await handler(_parse(await request.body()))
            except wire.WireError as exc:
                response = json_response({"error": exc.message}, exc.status)
            except NotReadyError as exc:
                response = json_response({"error": exc.message}, wire.NOT_READY)
            service.metrics.requests.labels(path, str(response.status_code)).inc()
            return response

        app.add_api_route(path, endpoint, methods=["POST"])

    async def batch(body: Any) -> Response:
        service.require_ready()
        items = wire.check_request(body, service.settings.max_batch)
        return json_response((await service.predict(items)).body())

    async def one(body: Any) -> Response:
        result = await service.predict([body])
        if 0 in result.errors:
            return json_response({"error": result.errors[0], "model": result.model}, 422)
        return json_response({"output": result.outputs[0], "model": result.model})

    route(wire.BATCH_PATH, batch)
    route("/predict", one)


def _probe_routes(app: FastAPI, service: ModelService) -> None:
    @app.get(wire.HEALTH_PATH)
    async def health() -> Response:
        response = json_response({"status": "ok"})
        response.headers[wire.CONCURRENCY_HEADER] = str(service.max_concurrent_batches)
        return response

    @app.get("/ready")
    async def ready() -> Response:
        version = service.require_ready()
        return json_response({"status": "ready", "model": version.info})

    @app.get("/model")
    async def model(request: Request) -> Response:
        rollout: dict[str, Any] = request.app.state.rollout.status()
        if service.serving is None:
            return json_response({"error": service.not_ready, "rollout": rollout}, 503)
        return json_response({**service.describe(), "rollout": rollout})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _delivery_routes(app: FastAPI, admin_token: str | None) -> None:
    @app.get("/deployment")
    async def deployment(request: Request, since: int = 0) -> Response:
        rollout: Rollout = request.app.state.rollout
        return json_response({**rollout.status(), "events": rollout.events.since(since)})

    if not admin_token:
        return  # admin routes are off: 404 like any unknown path

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        if not bearer_matches(request, admin_token):
            return json_response({"error": "missing or wrong admin token (Bearer)."}, 401)
        rollout: Rollout = request.app.state.rollout
        return json_response(await rollout.reload())


def bearer_matches(request: Request, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> Response:
        return json_response({"error": exc.message}, wire.NOT_READY)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return json_response({"error": "the request is not valid.", "details": exc.errors()}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s", request.url.path)
        return json_response({"error": "internal error; see the server log."}, 500)


def _parse(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise wire.WireError(wire.BAD_JSON, f"the request body is not valid JSON: {exc}.") from None
