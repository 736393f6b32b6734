"""The registry server's settings: flags, or NEXUS_REGISTRY_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from control_plane.web import DEFAULT_PORT


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_REGISTRY_", frozen=True, extra="forbid")

    workspace: Path = Field(
        default_factory=Path.cwd, description="a clone of the team's repository"
    )
    tokens: Path | None = Field(default=None, description="token file; without it, read-only")
    push: bool = Field(default=False, description="push each change's commit to the remote")
    remote: str = "origin"
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    grpc_port: int | None = Field(default=None, ge=0, le=65535)  # the update stream over gRPC
    page_size: int = Field(default=50, ge=1, le=1000)
