"""`.nexusrc` (YAML at the repository root) plus NEXUS_* environment overrides.

Credentials never live in `.nexusrc`: they come from each provider's usual
environment variables and files, so a key that looks like a secret is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from control_plane.errors import ConfigError

CONFIG_FILENAME = ".nexusrc"
DEFAULT_LOCAL_PATH = ".nexus/store"
PROVIDERS = ("local", "s3", "gcs")

_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|private[_-]?key|access[_-]?key|credential|api[_-]?key",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_CREDENTIALS_HINT = (
    "credentials belong in the provider's environment: AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY or ~/.aws for S3, GOOGLE_APPLICATION_CREDENTIALS for GCS"
)


@dataclass(frozen=True)
class NexusConfig:
    """Where model binaries live. Every field is a `.nexusrc` key."""

    provider: str = "local"
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    path: str | None = None
    multipart_chunk_mb: int = 64
    max_concurrency: int = 8
    require_approval: bool = False
    dedup_by_config: bool = False
    sources: tuple[str, ...] = field(default=(), compare=False)

    def local_root(self, repo_root: Path) -> Path:
        """Directory of the local store; relative paths are relative to the repo."""
        root = Path(os.path.expanduser(self.path or DEFAULT_LOCAL_PATH))
        return root if root.is_absolute() else repo_root / root


_KEYS = {f.name for f in fields(NexusConfig)} - {"sources"}
_INT_KEYS = {"multipart_chunk_mb", "max_concurrency"}
_BOOL_KEYS = {"require_approval", "dedup_by_config"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_ENV_PREFIX = "NEXUS_"
_ENV_ALIASES = {"NEXUS_STORE_PATH": "path"}


def load_config(repo_root: Path, environ: Mapping[str, str] | None = None) -> NexusConfig:
    """Read `<repo_root>/.nexusrc` if present, then apply NEXUS_* overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: list[str] = []
    config_path = repo_root / CONFIG_FILENAME
    if config_path.is_file():
        values.update(_read_file(config_path))
        sources.append(str(config_path))
    for key in sorted(_KEYS):
        env_name = _ENV_PREFIX + key.upper()
        if env_name in env:
            values[key] = env[env_name]
            sources.append(env_name)
    for env_name, key in _ENV_ALIASES.items():
        if env_name in env:
            values[key] = env[env_name]
            sources.append(env_name)
    return _build(values, tuple(sources))


def _read_file(path: Path) -> dict[str, Any]:
    import yaml  # only when a .nexusrc exists

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {exc.problem}.") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must be a YAML mapping of keys to values, not {type(data).__name__}.",
            hint="see .nexusrc.example",
        )
    for key, value in data.items():
        if isinstance(value, str) and _SECRET_VALUE.search(value):
            raise ConfigError(
                f"{path} holds a private key under '{key}'; refusing to use it.",
                hint=_CREDENTIALS_HINT,
            )
    return {str(k): v for k, v in data.items()}


def _build(values: dict[str, Any], sources: tuple[str, ...]) -> NexusConfig:
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if _SECRET_KEY.search(key):
            raise ConfigError(
                f"'{key}' looks like a credential and must not be in .nexusrc.",
                hint=_CREDENTIALS_HINT,
            )
        if key not in _KEYS:
            raise ConfigError(
                f"unknown configuration key '{key}'.",
                hint="known keys: " + ", ".join(sorted(_KEYS)),
            )
        clean[key] = _coerce(key, value)
    provider = clean.get("provider", "local")
    if provider not in PROVIDERS:
        raise ConfigError(
            f"'provider' must be one of {', '.join(PROVIDERS)}, not '{provider}'.",
        )
    if provider != "local" and not clean.get("bucket"):
        raise ConfigError(
            f"provider '{provider}' needs a 'bucket'.",
            hint="add 'bucket: my-models' to .nexusrc or set NEXUS_BUCKET",
        )
    if "prefix" in clean:
        clean["prefix"] = clean["prefix"].strip("/")
    return NexusConfig(**clean, sources=sources)


def _coerce(key: str, value: Any) -> Any:
    if key in _BOOL_KEYS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"'{key}' must be true or false, not {value!r}.")
    if key in _INT_KEYS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if isinstance(value, bool) or number < 1:
            raise ConfigError(f"'{key}' must be a positive whole number, not {value!r}.")
        return number
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"'{key}' must be a non-empty string, not {value!r}.")
    return value.strip()
