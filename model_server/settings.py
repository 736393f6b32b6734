"""Model server settings: `nexus-model-server` flags, else NEXUS_* variables, else defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from control_plane.core.units import parse_size
from control_plane.registry.resolve import is_moving_ref
from nexus_common.slow_clients import DEFAULT_READ_TIMEOUT_S


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "nexus" / "models"


class ServerSettings(BaseSettings):
    """Every field is a flag (`--model-name`) and a variable (`NEXUS_MODEL_NAME`)."""

    model_config = SettingsConfigDict(
        env_prefix="NEXUS_",
        cli_prog_name="nexus-model-server",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        protected_namespaces=(),
        extra="ignore",
    )

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=1, le=65535, description="port to listen on")
    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="also serve the Open Inference Protocol over gRPC on this port (off unless "
        "set)",
    )
    model_name: str | None = Field(
        default=None, description="model to serve (needed when the metadata holds several)"
    )
    models: str | None = Field(
        default=None,
        description="several models, each NAME or NAME:REF, comma-separated (e.g. "
        "resnet:production,bert:latest); the first is the default of /predict. Overrides "
        "--model-name and --model-ref",
    )
    model_ref: str = Field(
        default="latest",
        description="version to serve: latest, staging, production, a commit hash or a 4+ char "
        "prefix",
    )
    follow: bool | None = Field(
        default=None,
        description="roll out the version the ref moves to (default: yes for latest and the "
        "stages, no for a commit)",
    )
    poll_interval_s: float = Field(
        default=5.0, gt=0, description="seconds between checks of the metadata (and remote)"
    )
    git_remote: str | None = Field(
        default=None, description="Git remote to fetch into the workspace on every check"
    )
    git_branch: str = Field(default="main", description="branch of --git-remote to follow")
    registry_url: str | None = Field(
        default=None,
        description="device mode: follow the ref through this nexus-registry's update stream "
        "(no Git clone here); the workspace (--repo) keeps only what it streams",
    )
    registry_token: str | None = Field(
        default=None, description="the registry token for --registry-url (a reader's is enough)"
    )
    admin_token: str | None = Field(
        default=None, description="bearer token for POST /admin/reload (unset: admin routes off)"
    )
    server_token: str | None = Field(
        default=None,
        description="bearer token POST /predict and /predict/batch require, so only the proxy "
        "(--upstream-token) can call them (unset: open)",
    )
    canary_percent: int = Field(
        default=10, ge=0, le=100, description="share of batches a new version answers on trial"
    )
    canary_min_items: int = Field(
        default=200, ge=1, description="items the new version answers before it is judged"
    )
    canary_min_s: float = Field(default=10.0, ge=0, description="seconds a canary lasts at least")
    canary_max_error_increase: float = Field(
        default=0.01, ge=0, le=1, description="error rate allowed above the current version's"
    )
    canary_max_latency_ratio: float = Field(
        default=1.5, ge=1, description="p99 batch time allowed, as a multiple of the current's"
    )
    repo: Path = Field(
        default=Path("."), description="directory holding .nexus_meta.json (or inside its Git repo)"
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="verified downloads, keyed by sha256"
    )
    device: str | None = Field(
        default=None, description="cuda, cuda:N or cpu (default: cuda if present)"
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="half precision on GPU (TorchScript)"
    )
    handler: str | None = Field(
        default=None, description="module:Class with load(path, device) and predict(items)"
    )
    trust_pickle: bool = Field(
        default=False, description="allow pickled torch modules (runs their code)"
    )
    trust_remote_code: bool = Field(
        default=False,
        description="allow a transformers folder whose config maps classes to its own code "
        "(auto_map; runs that code, confined like any model's)",
    )
    instances: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes per served version, each running one batch at a time "
        "(so this many batches run at once; announced to the proxy)",
    )
    in_process: bool = Field(
        default=False,
        description="run models inside the server's own process, unconfined, one batch at a "
        "time (no workers: for debugging and as the benchmarks' baseline)",
    )
    confine: Literal["on", "off"] = Field(
        default="on",
        description="confine the workers (seccomp, Landlock, limits) where the kernel allows; "
        "off is for debugging and is logged as a warning",
    )
    worker_memory: str | None = Field(
        default=None,
        description="address-space limit of each CPU worker, e.g. 8GiB (default: the "
        "machine's memory)",
    )
    worker_env: str | None = Field(
        default=None,
        description="comma-separated names of variables the workers get from the server's "
        "environment (a handler's own settings); workers get no other variable but locale, "
        "library paths and thread counts",
    )
    batch_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="a worker that holds a batch longer is stopped (the batch fails) and restarted",
    )
    load_timeout_s: float = Field(
        default=600.0, gt=0, description="time a worker has to load and warm up a version"
    )
    max_batch: int = Field(
        default=256, ge=1, description="largest batch accepted by /predict/batch"
    )
    warmup_batch: int = Field(
        default=32,
        ge=1,
        description="before it serves, a version runs synthetic batches of 1 and of this many "
        "rows (the proxy's --max-batch-size), so no caller pays for the first run",
    )
    max_body_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="largest request body (413 above it)"
    )
    read_timeout_s: float = Field(
        default=DEFAULT_READ_TIMEOUT_S,
        gt=0,
        description="time a client has to send a whole request, headers and body; then 408 "
        "and the connection is closed",
    )
    log_level: str = Field(default="info", description="uvicorn log level")

    @property
    def model_specs(self) -> list[tuple[str | None, str]]:
        """(model name, ref) of each model served, the default first."""
        if not self.models:
            return [(self.model_name, self.model_ref)]
        specs: list[tuple[str | None, str]] = []
        for part in self.models.split(","):
            name, _, ref = part.strip().partition(":")
            if not name.strip():
                raise ValueError(f"'{self.models}': each model is NAME or NAME:REF.")
            if any(name.strip() == seen for seen, _ in specs):
                raise ValueError(f"'{self.models}': {name.strip()} is named twice.")
            specs.append((name.strip(), ref.strip() or "latest"))
        return specs

    @property
    def worker_memory_bytes(self) -> int | None:
        return None if self.worker_memory is None else parse_size(self.worker_memory)

    @model_validator(mode="after")
    def _models_parse(self) -> ServerSettings:
        self.model_specs  # noqa: B018  # a bad --models fails at start, with its reason
        self.worker_memory_bytes  # noqa: B018  # and a bad --worker-memory
        if self.registry_url and not (self.model_name or self.models):
            raise ValueError("--registry-url follows one model's ref: name it (--model-name).")
        if self.registry_url and self.git_remote:
            raise ValueError("follow either --registry-url or --git-remote, not both.")
        return self

    def for_model(self, name: str | None, ref: str) -> ServerSettings:
        """These settings for one of the models served."""
        return self.model_copy(update={"model_name": name, "model_ref": ref, "models": None})

    @property
    def follows(self) -> bool:
        """Latest, the stages and aliases move; a version number or a commit does not."""
        if self.follow is not None:
            return self.follow
        return is_moving_ref(self.model_ref)
