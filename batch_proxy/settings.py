"""Proxy settings: flags, NEXUS_PROXY_* environment variables, and their agreement.

Limits are checked against each other at start-up so none silently caps a batch
below `max_batch_size`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "NEXUS_PROXY_"


class SettingsError(ValueError):
    """A setting is out of range or contradicts another."""


@dataclass(frozen=True)
class ProxySettings:
    upstreams: tuple[str, ...] = ("http://127.0.0.1:8000",)
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_size: int = 32
    max_wait_ms: float = 50.0
    eager: bool = True
    max_inflight: int = 2
    max_queue: int = 1024
    request_timeout_s: float = 30.0
    upstream_timeout_s: float = 30.0
    health_interval_s: float = 1.0
    max_body_bytes: int = 16 * 1024 * 1024
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise SettingsError("at least one upstream URL is needed (--upstream).")
        for url in self.upstreams:
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"upstream '{url}' must be an http:// or https:// URL.")
        positive = ("max_batch_size", "max_inflight", "max_queue", "max_body_bytes")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, not {getattr(self, name)}.")
        for name in ("request_timeout_s", "upstream_timeout_s", "health_interval_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)}.")
        if self.max_wait_ms < 0:
            raise SettingsError(f"max_wait_ms must not be negative, not {self.max_wait_ms}.")
        if self.max_queue < self.max_batch_size:
            raise SettingsError(
                f"max_queue ({self.max_queue}) must hold at least one full batch "
                f"(max_batch_size {self.max_batch_size})."
            )

    @property
    def connection_pool_size(self) -> int:
        """Enough connections for every in-flight batch plus each health check."""
        return len(self.upstreams) * (self.max_inflight + 1)

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, raw: str, kind: Any) -> Any:
    if name == "upstreams":
        return tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    if kind is bool or kind == "bool":
        value = raw.strip().lower()
        if value in _BOOL_TRUE:
            return True
        if value in _BOOL_FALSE:
            return False
        raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be true or false, not '{raw}'.")
    converter, noun = {"int": (int, "whole number"), "float": (float, "number")}.get(
        str(kind), (str, "string")
    )
    try:
        return converter(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a {noun}, not '{raw}'.") from None


def settings_from(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> ProxySettings:
    """Defaults, overridden by NEXUS_PROXY_* variables, overridden by flags."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(ProxySettings):
        key = ENV_PREFIX + f.name.upper()
        if key in env:
            values[f.name] = _convert(f.name, env[key], f.type)
    args = _parser().parse_args(argv)
    for name, value in vars(args).items():
        if value is not None:
            values[name] = tuple(u.rstrip("/") for u in value) if name == "upstreams" else value
    return ProxySettings(**values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexus-proxy",
        description="Batching proxy: POST /predict items are grouped into "
        "POST <upstream>/predict/batch calls.",
    )
    add = parser.add_argument
    add(
        "--upstream",
        dest="upstreams",
        action="append",
        metavar="URL",
        help="model server base URL; repeat for several (default http://127.0.0.1:8000)",
    )
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="port to listen on (default 8080)")
    add("--max-batch-size", type=int, help="most items in one batch (default 32)")
    add("--max-wait-ms", type=float, help="longest an item waits for a batch (default 50)")
    add(
        "--eager",
        dest="eager",
        action="store_true",
        default=None,
        help="send at once when an upstream slot is free (default)",
    )
    add(
        "--no-eager",
        dest="eager",
        action="store_false",
        help="always wait for a full batch or max-wait-ms (the fixed policy)",
    )
    add("--max-inflight", type=int, help="batches in flight per upstream (default 2)")
    add("--max-queue", type=int, help="queued items before 503 (default 1024)")
    add("--request-timeout-s", type=float, help="per request, answered 504 (default 30)")
    add("--upstream-timeout-s", type=float, help="per batch call (default 30)")
    add("--health-interval-s", type=float, help="upstream health checks (default 1)")
    add("--max-body-bytes", type=int, help="largest request body (default 16 MiB)")
    add("--log-level", help="uvicorn log level (default info)")
    return parser
