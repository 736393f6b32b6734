"""The FastAPI app: one model version, loaded in the background, served in batches.

    POST /predict/batch  {"inputs": [item, ...]} -> {"outputs": [...], "model": {...}}
    POST /predict        item -> {"output": ..., "model": {...}}
    GET  /health /ready /model /metrics

Inference runs in one worker thread per server (one batch at a time on the
device), so the event loop keeps answering /health while a batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane import ModelEntry, NexusError, Registry
from model_server.inference import Predictor, build_predictor, resolve_device
from model_server.loader import fetch_version
from model_server.metrics import ServerMetrics
from model_server.settings import ServerSettings

logger = logging.getLogger("nexus.model_server")


@dataclass
class ServerState:
    """What the endpoints read; filled in by the background loader."""

    settings: ServerSettings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    entry: ModelEntry | None = None
    predictor: Predictor | None = None
    load_error: NexusError | None = None
    load_seconds: float = 0.0

    @property
    def model_info(self) -> dict[str, Any]:
        assert self.entry is not None
        return {
            "name": self.entry.model_name,
            "commit_hash": self.entry.commit_hash,
            "sha256": self.entry.sha256,
        }


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def load_model(settings: ServerSettings) -> tuple[ModelEntry, Predictor]:
    """Resolve, fetch (verified, cached), load and warm up. Blocking: run it in a thread."""
    registry = Registry(settings.repo)
    artifact = fetch_version(registry, settings.model_ref, settings.model_name, settings.cache_dir)
    device = resolve_device(settings.device)
    predictor = build_predictor(
        artifact.path,
        fmt=artifact.entry.format,
        device=device,
        dtype=settings.dtype,
        handler=settings.handler,
        trust_pickle=settings.trust_pickle,
    )
    predictor.warmup()
    return artifact.entry, predictor


def create_app(
    settings: ServerSettings, *, on_fatal: Callable[[NexusError], None] | None = None
) -> FastAPI:
    """The app; `on_fatal` is called if the model cannot be loaded (the CLI stops the server)."""
    state = ServerState(settings)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def load_in_background() -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            state.entry, state.predictor = await loop.run_in_executor(
                executor, load_model, settings
            )
        except NexusError as exc:
            state.load_error = exc
        except Exception as exc:
            logger.exception("loading the model failed")
            state.load_error = NexusError(f"loading the model failed: {exc}")
        if state.load_error is not None:
            if on_fatal is not None:
                on_fatal(state.load_error)
            return
        state.load_seconds = time.perf_counter() - started
        assert state.predictor is not None
        logger.info(
            "serving %s on %s (loaded in %.2f s)",
            state.model_info,
            state.predictor.device,
            state.load_seconds,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(load_in_background())
        try:
            yield
        finally:
            task.cancel()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="NexusML model server", lifespan=lifespan)
    app.state.nexus = state

    async def run_batch(items: list[Any]) -> list[Any]:
        predictor = state.predictor
        assert predictor is not None
        started = time.perf_counter()
        outputs = await asyncio.get_running_loop().run_in_executor(
            executor, predictor.predict, items
        )
        state.metrics.inference_seconds.observe(time.perf_counter() - started)
        state.metrics.batch_size.observe(len(items))
        state.metrics.items.inc(len(items))
        return outputs

    def not_ready() -> Response | None:
        if state.predictor is None:
            return json_response({"error": "the model is still loading; retry shortly."}, 503)
        return None

    def prediction_route(path: str, handler: Callable[[Request], Awaitable[Response]]) -> None:
        """POST `path`: 503 until the model is loaded; every answer counted by status."""

        async def endpoint(request: Request) -> Response:
            response = not_ready() or await handler(request)
            state.metrics.requests.labels(path, str(response.status_code)).inc()
            return response

        app.add_api_route(path, endpoint, methods=["POST"])

    async def _batch(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            return json_response({"error": 'the body must be {"inputs": [item, ...]}.'}, 422)
        if not inputs:
            return json_response({"error": "'inputs' is empty; send at least one item."}, 422)
        if len(inputs) > settings.max_batch:
            return json_response(
                {
                    "error": f"the batch has {len(inputs)} items; the limit is "
                    f"{settings.max_batch} (NEXUS_MAX_BATCH)."
                },
                413,
            )
        outputs = await run_batch(inputs)
        return json_response({"outputs": outputs, "model": state.model_info})

    async def _one(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        (output,) = await run_batch([body])
        if isinstance(output, dict) and set(output) == {"error"}:
            return json_response({"error": output["error"], "model": state.model_info}, 422)
        return json_response({"output": output, "model": state.model_info})

    prediction_route("/predict/batch", _batch)
    prediction_route("/predict", _one)

    @app.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        if state.load_error is not None:
            return json_response({"error": state.load_error.message}, 503)
        return not_ready() or json_response({"status": "ready", "model": state.model_info})

    @app.get("/model")
    async def model() -> Response:
        if state.entry is None:
            return not_ready() or json_response({"error": "no model loaded."}, 503)
        assert state.predictor is not None
        return json_response(
            {
                **state.entry.to_dict(),
                "device": state.predictor.device,
                "load_seconds": round(state.load_seconds, 3),
                "example_input": state.predictor.example_item(),
            }
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

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

    return app


async def _json_body(request: Request) -> Any:
    data = await request.body()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return json_response({"error": f"the request body is not valid JSON: {exc}."}, 400)
