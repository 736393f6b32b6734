"""The registry's settings: `.nexusrc` (YAML at the repository root) under NEXUS_* variables.

Credentials never live in `.nexusrc`: they come from each provider's usual
environment variables and files, so a key that looks like a secret is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from control_plane.settings import CONFIG_FILENAME
from control_plane.settings.sources import load_settings

DEFAULT_LOCAL_PATH = ".nexus/store"
PROVIDERS = ("local", "s3", "gcs")


def _positive_whole_number(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError("must be a positive whole number")
    return number


def _non_empty_text(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value.strip()
    return value  # anything else fails the str check with the same words


PositiveInt = Annotated[int, BeforeValidator(_positive_whole_number)]
Text = Annotated[str, BeforeValidator(_non_empty_text)]


class NexusConfig(BaseSettings):
    """Where model binaries live, and the registry's rules. Every field is a `.nexusrc` key.

    Built directly it takes only the values given; `load_config` adds `.nexusrc` and NEXUS_*.
    """

    model_config = SettingsConfigDict(env_prefix="NEXUS_", frozen=True, extra="forbid")

    provider: Literal["local", "s3", "gcs", "azure"] = "local"
    bucket: Text | None = None
    prefix: str = ""
    endpoint_url: Text | None = None
    region: Text | None = None
    path: Text | None = None
    multipart_chunk_mb: PositiveInt = 64
    max_concurrency: PositiveInt = 8
    require_approval: bool = False
    dedup_by_config: bool = False
    # trust: paths only (a PEM in here is refused); relative paths are the repository's
    signing_key: Path | None = None
    trusted_keys: Path | None = None
    require_signature: bool = False
    require_signed_approval: bool = False
    # integrations: an event per change (the webhook's secret only from NEXUS_WEBHOOK_SECRET)
    events_file: Path | None = None
    webhook_url: Text | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # load_config reads the file and the environment

    @model_validator(mode="after")
    def _cloud_needs_bucket(self) -> NexusConfig:
        if self.provider != "local" and not self.bucket:
            raise ValueError(
                f"provider '{self.provider}' needs a 'bucket': add 'bucket: my-models' to "
                ".nexusrc or set NEXUS_BUCKET"
            )
        object.__setattr__(self, "prefix", self.prefix.strip().strip("/"))
        return self

    def repo_path(self, path: Path, repo_root: Path) -> Path:
        """A configured path: `~` expanded, relative ones from the repository root."""
        path = Path(os.path.expanduser(path))
        return path if path.is_absolute() else repo_root / path

    def local_root(self, repo_root: Path) -> Path:
        """Directory of the local store; relative paths are relative to the repo."""
        return self.repo_path(Path(self.path or DEFAULT_LOCAL_PATH), repo_root)


def load_config(repo_root: Path, environ: Mapping[str, str] | None = None) -> NexusConfig:
    """Read `<repo_root>/.nexusrc` if present, then apply NEXUS_* overrides."""
    return load_settings(
        NexusConfig,
        yaml_file=repo_root / CONFIG_FILENAME,
        environ=environ,
        aliases={"NEXUS_STORE_PATH": "path"},
    )
