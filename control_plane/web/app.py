"""The registry's web application: the API under /api/v1, the pages, the stylesheet."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from control_plane.core.errors import NexusError
from control_plane.web import api, pages
from control_plane.web.errors import sentence, status_of
from control_plane.web.settings import RegistrySettings
from control_plane.web.state import RegistryState


def create_app(settings: RegistrySettings) -> FastAPI:
    state = RegistryState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = None
        if settings.grpc_port is not None:
            from control_plane.web import grpc_updates

            server = await grpc_updates.start(state, settings.host, settings.grpc_port)
        try:
            yield
        finally:
            if server is not None:
                await server.stop(grace_s=1)

    app = FastAPI(
        lifespan=lifespan,
        title="NexusML registry",
        description="Models and versions, their lifecycle and audit log. Every change is a "
        "Git commit made as the token's owner.",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.registry = state
    app.include_router(api.router, prefix="/api/v1")
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.exception_handler(NexusError)
    async def registry_error(request: Request, exc: NexusError) -> Response:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": sentence(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        said = str(first.get("msg", "invalid input")).rstrip(".")
        return JSONResponse({"error": f"{where}: {said}." if where else f"{said}."}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method the path has, not the first route's only
            headers["Allow"] = ", ".join(_methods(app, request.scope))
        return JSONResponse({"error": f"{exc.detail}."}, exc.status_code, headers=headers)

    return app


def _methods(app: FastAPI, scope: MutableMapping[str, Any]) -> list[str]:
    found: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**scope, "method": next(iter(route.methods))})
            if match is Match.FULL:
                found |= route.methods
    return sorted(found)
