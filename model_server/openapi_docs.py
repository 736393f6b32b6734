"""What the model server's routes take and answer, for its OpenAPI document.

The routes read their bodies themselves (orjson and the wire contract, not pydantic:
see docs/decisions.md), so FastAPI cannot see them; these say what they are. Every
error is `{"error": sentence}`; schemathesis holds the server to this document in
tests/reliability/test_fuzz_servers.py.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_WHY = {
    400: "the body is not JSON, or not what the route takes",
    401: "the server token is missing or wrong",
    404: "no such model here",
    408: "the request did not arrive within --read-timeout-s",
    413: "the body is over --max-body-bytes",
    422: "the item or batch breaks the wire contract, or the model refused the item",
    503: "no version is loaded yet",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for FastAPI: each status with its reason and the error body."""
    return {
        status: {"description": _WHY[status], "content": {"application/json": {"schema": _ERROR}}}
        for status in statuses
    }


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """`openapi_extra=` for FastAPI: a required JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def named(extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` for the /models/{name}/... twin of a route (its endpoint reads the name from
    the path itself, so FastAPI would not list it)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {**extra, "parameters": [name]}


BATCH_BODY = json_body(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {"inputs": {"type": "array", "minItems": 1}},
    },
    'a batch: {"inputs": [item, ...]} (nexus_common/wire.py)',
)
ITEM_BODY = json_body({}, "one item, as the model's handler takes it")
PREDICTION_ERRORS = errors(400, 401, 404, 413, 422, 503)
