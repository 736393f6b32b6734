"""Proxy settings: flags, NEXUS_PROXY_* environment variables, and their agreement.

Limits are checked against each other at start-up so none silently caps a batch
below `max_batch_size`.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from batch_proxy.errors import SettingsError
from batch_proxy.policies import DEFAULT_POLICY, POLICIES, PolicyName
from nexus_common.settings import MappingEnvSource
from nexus_common.slow_clients import DEFAULT_READ_TIMEOUT_S

ENV_PREFIX = "NEXUS_PROXY_"


_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DEFAULT_UPSTREAM = ("http://127.0.0.1:8000",)
DNS_UPSTREAMS = 16  # connections are budgeted for this many replicas behind one DNS name


def split_upstream(entry: str) -> tuple[str | None, str]:
    """`MODEL=URL` -> (MODEL, URL); a bare `URL` -> (None, URL)."""
    if "=" in entry.split("://", 1)[0]:
        model, url = entry.split("=", 1)
        return model.strip(), url.strip().rstrip("/")
    return None, entry


def split_host_port(entry: str) -> tuple[str, int]:
    """`name:8000` -> ('name', 8000); ValueError with a sentence otherwise."""
    host, _, port = entry.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{entry}' is not HOST:PORT (e.g. model-server-headless:8000).")
    return host, int(port)


def _check_model_name(entry: str, model: str | None) -> None:
    if model is not None and not _MODEL_NAME.match(model):
        raise ValueError(
            f"upstream '{entry}': '{model}' is not a model name (letters, digits, . _ -)."
        )


def _urls(value: Any) -> Any:
    """`a, b` (a variable) or a sequence (flags): trimmed, without a trailing slash."""
    parts = value.split(",") if isinstance(value, str) else value
    if isinstance(parts, list | tuple):
        return tuple(str(u).strip().rstrip("/") for u in parts if str(u).strip())
    return value


def _numbers(value: Any) -> Any:
    """`1024, 256` (a variable or flag) -> a tuple, one value per priority level."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ProxySettings(BaseSettings):
    """Every field is a flag (`--max-batch-size`) and a variable (`NEXUS_PROXY_MAX_BATCH_SIZE`).

    Built directly it takes only the values given; `settings_from` adds flags and variables.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    upstreams: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_urls)] = ()
    upstream_dns: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_urls)] = ()
    dns_interval_s: float = 5.0
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    max_batch_size: int = 32
    max_wait_ms: float = 50.0
    policy: PolicyName = DEFAULT_POLICY
    max_inflight: int | None = None
    upstream_concurrency: int | None = None
    max_queue: int = 1024
    request_timeout_s: float = 30.0
    upstream_timeout_s: float = 30.0
    health_interval_s: float = 1.0
    max_body_bytes: int = 16 * 1024 * 1024
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    log_level: str = "info"
    api_keys: Path | None = None
    upstream_token: str | None = None
    priority_levels: int = 2
    priority_max_queue: Annotated[tuple[int, ...], NoDecode, BeforeValidator(_numbers)] = ()
    priority_timeout_s: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_numbers)] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _default_upstream(cls, values: Any) -> Any:
        """The model server on this host, unless upstreams are named or found in DNS."""
        if (
            isinstance(values, dict)
            and not values.get("upstreams")
            and not values.get("upstream_dns")
        ):
            return {**values, "upstreams": DEFAULT_UPSTREAM}
        return values

    @model_validator(mode="after")
    def _limits_agree(self) -> ProxySettings:
        """Limits are checked against each other so none silently caps a batch."""
        for entry in self.upstream_dns:
            model, name = split_upstream(entry)
            try:
                split_host_port(name)
            except ValueError as exc:
                raise ValueError(f"--upstream-dns {exc}") from None
            _check_model_name(entry, model)
        for entry in self.upstreams:
            model, url = split_upstream(entry)
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream '{url}' must be an http:// or https:// URL.")
            _check_model_name(entry, model)
        for name in (
            "max_batch_size",
            "max_inflight",
            "upstream_concurrency",
            "max_queue",
            "max_body_bytes",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}.")
        for name in (
            "request_timeout_s",
            "upstream_timeout_s",
            "health_interval_s",
            "dns_interval_s",
            "read_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}.")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, not {self.max_wait_ms}.")
        if self.priority_levels < 1:
            raise ValueError(f"priority_levels must be at least 1, not {self.priority_levels}.")
        for name in ("priority_max_queue", "priority_timeout_s"):
            given = getattr(self, name)
            if given and len(given) != self.priority_levels:
                raise ValueError(
                    f"{name} has {len(given)} values; give one per priority level "
                    f"({self.priority_levels}), highest first."
                )
            if any(v <= 0 for v in given):
                raise ValueError(f"{name} values must be positive, not {list(given)}.")
        if self.max_queue < self.max_batch_size:
            raise ValueError(
                f"max_queue ({self.max_queue}) must hold at least one full batch "
                f"(max_batch_size {self.max_batch_size})."
            )
        return self

    @property
    def upstream_groups(self) -> dict[str | None, tuple[str, ...]]:
        """Upstream URLs by the model they serve; None: shared by every model. In the order
        given (the first named model is the default when no upstream is shared)."""
        groups: dict[str | None, list[str]] = {}
        for entry in self.upstreams:
            model, url = split_upstream(entry)
            groups.setdefault(model, []).append(url)
        for model in self.dns_names:
            groups.setdefault(model, [])
        return {model: tuple(urls) for model, urls in groups.items()}

    @property
    def dns_names(self) -> dict[str | None, tuple[str, int]]:
        """The DNS name (host, port) whose addresses serve each model (None: shared)."""
        names = (split_upstream(entry) for entry in self.upstream_dns)
        return {model: split_host_port(name) for model, name in names}

    @property
    def connection_pool_size(self) -> int:
        """Enough connections for every in-flight batch plus each health check.

        Without `max_inflight` the adaptive policy keeps an upstream's concurrency
        plus one batch in flight; 64 covers any upstream that says it runs 63.
        """
        upstreams = max(1, len(self.upstreams)) + DNS_UPSTREAMS * len(self.upstream_dns)
        return upstreams * ((self.max_inflight or 64) + 1)  # per pool: an upper bound

    @property
    def queue_limits(self) -> tuple[int, ...]:
        """Requests each priority level may hold, level 1 (the highest) first."""
        return self.priority_max_queue or (self.max_queue,) * self.priority_levels

    def timeout_s(self, priority: int) -> float:
        """How long a request of `priority` may wait for its answer."""
        if self.priority_timeout_s:
            return self.priority_timeout_s[priority - 1]
        return self.request_timeout_s

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0


_EXPECTED = {
    "bool_parsing": "true or false",
    "int_parsing": "a whole number",
    "literal_error": "one of " + ", ".join(POLICIES),
}


def settings_from(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None, **explicit: Any
) -> ProxySettings:
    """Defaults, overridden by NEXUS_PROXY_* variables, then flags, then `explicit` values."""
    values: dict[str, Any] = dict(
        MappingEnvSource(ProxySettings, os.environ if environ is None else environ)()
    )
    flags = {k: v for k, v in vars(_parser().parse_args(argv)).items() if v is not None}
    flags.update(explicit)
    values.update(flags)
    try:
        return ProxySettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "value_error":
            raise SettingsError(str(error["ctx"]["error"])) from None
        name = str(error["loc"][0]) if error["loc"] else "settings"
        where = f"--{name.replace('_', '-')}" if name in flags else ENV_PREFIX + name.upper()
        expected = _EXPECTED.get(error["type"], "a number" if "float" in error["type"] else "")
        problem = f"must be {expected}" if expected else error["msg"].lower()
        raise SettingsError(f"{where} {problem}, not '{error['input']}'.") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nexus-proxy",
        description="Batching proxy: POST /predict items are grouped into "
        "POST <upstream>/predict/batch calls.",
    )
    _upstream_flags(parser.add_argument)
    _batching_flags(parser.add_argument)
    _limit_flags(parser.add_argument)
    return parser


def _upstream_flags(add: Callable[..., Any]) -> None:
    """Where the proxy listens and where its model servers are."""
    add(
        "--upstream",
        dest="upstreams",
        action="append",
        metavar="[MODEL=]URL",
        help="model server base URL; repeat for several (default http://127.0.0.1:8000); "
        "MODEL=URL sends only that model's requests there",
    )
    add(
        "--upstream-dns",
        dest="upstream_dns",
        action="append",
        metavar="[MODEL=]HOST:PORT",
        help="model servers found in DNS: every address of HOST (a headless Service), looked "
        "up again every --dns-interval-s; a new one joins once its /ready answers, a gone "
        "one is drained",
    )
    add("--dns-interval-s", type=float, help="DNS look-ups for --upstream-dns (default 5)")
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="port to listen on (default 8080)")
    add(
        "--grpc-port",
        type=int,
        help="also serve the Open Inference Protocol over gRPC on this port (default off)",
    )


def _batching_flags(add: Callable[..., Any]) -> None:
    """When a batch leaves, and how many are in flight."""
    add("--max-batch-size", type=int, help="most items in one batch (default 32)")
    add("--max-wait-ms", type=float, help="longest an item waits for a batch (default 50)")
    add(
        "--policy",
        help="when a batch leaves: adaptive (default; learns the model's batch time, the "
        "arrival rate and returning callers), eager (whenever an upstream slot is free) "
        "or fixed (a full batch or max-wait-ms)",
    )
    add("--eager", dest="policy", action="store_const", const="eager", help="--policy eager")
    add("--no-eager", dest="policy", action="store_const", const="fixed", help="--policy fixed")
    add(
        "--max-inflight",
        type=int,
        help="most batches in flight per upstream (default: adaptive, its concurrency + 1; "
        "eager and fixed, 2)",
    )
    add(
        "--upstream-concurrency",
        type=int,
        help="batches each upstream runs at once, for an upstream that does not say so "
        "(default: its /health header, else 1)",
    )


def _limit_flags(add: Callable[..., Any]) -> None:
    """Queues, priorities, deadlines, sizes, logging and who may call."""
    add(
        "--max-queue", type=int, help="queued requests per priority level before 429 (default 1024)"
    )
    add(
        "--priority-levels",
        type=int,
        help="priority levels (default 2): X-Priority or v2 parameters.priority 1 is the "
        "highest; a request without one gets the lowest",
    )
    add("--priority-max-queue", metavar="N,N", help="queued requests per level, highest first")
    add("--priority-timeout-s", metavar="S,S", help="request timeout per level, highest first")
    add("--request-timeout-s", type=float, help="per request, answered 504 (default 30)")
    add("--upstream-timeout-s", type=float, help="per batch call (default 30)")
    add("--health-interval-s", type=float, help="upstream health checks (default 1)")
    add("--max-body-bytes", type=int, help="largest request body (default 16 MiB)")
    add(
        "--read-timeout-s",
        type=float,
        help="time a client has to send a whole request, headers and body; then 408 and the "
        "connection is closed (default 30)",
    )
    add("--log-level", help="uvicorn log level (default info)")
    add(
        "--upstream-token",
        metavar="TOKEN",
        help="bearer token sent to the upstreams (their NEXUS_SERVER_TOKEN); better given as "
        "NEXUS_PROXY_UPSTREAM_TOKEN, which no process listing shows",
    )
    add(
        "--api-keys",
        metavar="FILE",
        help="admit only requests carrying a key from FILE, each at its own rate (made by "
        "'nexus keys create'; re-read when it changes); default: no keys needed",
    )
