"""pydantic-settings fed from a given environment, and its errors said in one sentence.

Every part declares a pydantic-settings model; each reads NEXUS_* variables through
`MappingEnvSource` (a mapping handed in, so tests and `nexus serve` need not touch
os.environ), says a validation failure with `describe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

# pydantic's error types, said the way a person would.
_EXPECTED = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a non-empty string",
    "literal_error": "must be one of {expected}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


class MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (os.environ by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def describe(exc: ValidationError, origin: Mapping[str, str] | None = None) -> str:
    """The first problem as one sentence: the key, what it must be, what it was, and where."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    context = {k: _show(v) for k, v in (error.get("ctx") or {}).items()}
    if error["type"] == "value_error":
        expected = str(context.get("error", error["msg"]))
    else:
        expected = _EXPECTED.get(error["type"], error["msg"].lower()).format(**context)
    where = f" (from {origin[key]})" if origin and key in origin else ""
    subject = f"'{key}' " if key else ""
    shown = "" if error["type"] == "missing" else f", not {error['input']!r}"
    return f"{subject}{expected}{shown}{where}."


def _show(value: Any) -> str:
    text = str(value)
    return text.replace("'", "") if text.startswith("'") else text
