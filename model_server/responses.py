"""What the model server's routes share: a JSON answer, and the bearer-token checks (the
server token the proxy presents, the admin token)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from nexus_common import wire


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=wire.CONTENT_TYPE)


def token_guard(token: str | None) -> Callable[[Request], Response | None]:
    """The 401 for a caller without the server token (None: let it through)."""

    def guard(request: Request) -> Response | None:
        if token and not bearer_matches(request, token):
            refusal = "missing or wrong server token (Bearer): call through the proxy."
            return json_response({"error": refusal}, 401)
        return None

    return guard


def bearer_matches(request: Request, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())
