"""Model server settings: `nexus-model-server` flags, else NEXUS_* variables, else defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    model_name: str | None = Field(
        default=None, description="model to serve (needed when the metadata holds several)"
    )
    model_ref: str = Field(
        default="latest", description="version to serve: latest, a commit hash or a 4+ char prefix"
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
    max_batch: int = Field(
        default=256, ge=1, description="largest batch accepted by /predict/batch"
    )
    log_level: str = Field(default="info", description="uvicorn log level")
