"""The one settings mechanism: pydantic-settings models fed by a YAML file, NEXUS_* and flags.

Each part declares a pydantic-settings model; `load_settings` reads its sources
in order of precedence (explicit values such as flags, then the environment,
then the YAML file), merges them, validates once, and turns every failure into
a ConfigError that names the key and where its value came from. Secrets are
refused before anything else is looked at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from control_plane.core.errors import ConfigError
from nexus_common.settings import MappingEnvSource, describe

S = TypeVar("S", bound=BaseSettings)

_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|private[_-]?key|access[_-]?key|account[_-]?key|credential"
    r"|api[_-]?key|connection[_-]?string|sas[_-]?token",
    re.IGNORECASE,
)
_SECRET_VALUES = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "an Azure account key or SAS": re.compile(r"AccountKey=|SharedAccessSignature=|[?&]sig="),
}
CREDENTIALS_HINT = (
    "credentials belong in the provider's environment: AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY or ~/.aws for S3, GOOGLE_APPLICATION_CREDENTIALS for GCS, "
    "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT_KEY, or Azure's default "
    "credentials) for Azure"
)


def read_yaml_file(path: Path) -> dict[str, Any]:
    """A YAML mapping of keys to values, or a ConfigError with the line and column."""
    import yaml  # only when the file exists

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
    return {str(k): v for k, v in data.items()}


def refuse_secrets(values: Mapping[str, Any], where: str) -> None:
    """A key that names a credential, or a value holding a private key, is refused outright."""
    for key, value in values.items():
        for what, pattern in _SECRET_VALUES.items():
            if isinstance(value, str) and pattern.search(value):
                raise ConfigError(
                    f"{where} holds {what} under '{key}'; refusing to use it.",
                    hint=CREDENTIALS_HINT,
                )
        if _SECRET_KEY.search(key):
            raise ConfigError(
                f"'{key}' looks like a credential and must not be in {where}.",
                hint=CREDENTIALS_HINT,
            )


def load_settings(
    cls: type[S],
    *,
    yaml_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
    **explicit: Any,
) -> S:
    """Explicit values over NEXUS_* variables over the YAML file over defaults, validated once.

    `aliases` maps extra variable names to fields (e.g. NEXUS_STORE_PATH -> path).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if yaml_file is not None and yaml_file.is_file():
        from_file = read_yaml_file(yaml_file)
        refuse_secrets(from_file, str(yaml_file))
        known = set(cls.model_fields)
        for key in from_file:
            if key not in known:
                raise ConfigError(
                    f"unknown configuration key '{key}' in {yaml_file}.",
                    hint="known keys: " + ", ".join(sorted(known)),
                )
        values.update(from_file)
        origin.update(dict.fromkeys(from_file, str(yaml_file)))
    from_env = MappingEnvSource(cls, env)()
    values.update(from_env)
    prefix = str(cls.model_config.get("env_prefix", ""))
    origin.update({key: prefix + key.upper() for key in from_env})
    for name, key in (aliases or {}).items():
        if name in env:
            values[key], origin[key] = env[name], name
    values.update({k: v for k, v in explicit.items() if v is not None})
    origin.update({k: "the command line" for k, v in explicit.items() if v is not None})
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe(exc, origin)) from None
