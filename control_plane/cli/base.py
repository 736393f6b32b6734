"""What every group of `nexus` commands shares: its help's look, the error handler, the
common options, option parsing and the closing commit hint.

Each command parses its options, makes one Registry call and renders the
result. Expected failures (the NexusError tree) print `Error: ...` and a hint
to stderr and exit with the error's code; Ctrl-C exits 130. A module's commands
form a Typer app (`group()`); `cli/root.py` joins them with `add_typer`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from control_plane.cli import render as ui
from control_plane.core.errors import NexusError, UsageError
from control_plane.metadata import METADATA_FILENAME
from control_plane.metadata.location import find_root

P = ParamSpec("P")
R = TypeVar("R")


class NexusCommand(TyperCommand):
    """Help that reads like gh's or uv's: `nexus store [OPTIONS] PATH MODEL_NAME`, `--tag TEXT`.

    Typer labels values by their Python type (`<list[str]>`, `{path}`); click's words
    for values, bare flags and plain argument names read better.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or ""
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class NexusGroup(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(super().get_params(ctx))


def _tidy(params: list[Any]) -> list[Any]:
    for param in params:
        if param.metavar is None:
            param.metavar = _metavar(param)
        if isinstance(param, TyperArgument):
            # The name column already says what it is; no second `<str>` column.
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010
    return params


def _metavar(param: Any) -> str:
    if isinstance(param, TyperOption) and param.is_flag:
        return ""
    if isinstance(param, TyperArgument):
        return (param.name or "").upper()
    described = param.type_descriptor
    if described.is_path:
        return "PATH"
    kind = get_args(described.annotation)[0] if described.is_list else described.annotation
    return {int: "INTEGER", float: "NUMBER"}.get(kind, "TEXT")


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", "-m", help="Restrict to this model.")
]
KeyOption = Annotated[
    Path | None,
    typer.Option("--key", help="EC private key (PEM) to sign with; default: signing_key."),
]


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the NexusError tree into one message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except NexusError as exc:
            ui.error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            ui.error(NexusError("interrupted."))
            raise typer.Exit(130) from None

    return wrapper


def commit_hint(message: str) -> None:
    """How to commit what a command changed: every file of the registry's own that Git has
    not committed (a first store writes .gitattributes and .gitignore too), by name."""
    from control_plane.registry.git import own_files_to_commit

    files = own_files_to_commit(find_root(Path.cwd())) or [METADATA_FILENAME]
    ui.info(f"Commit the metadata: git add {' '.join(files)} && git commit -m '{message}'")


def group(**kwargs: Any) -> typer.Typer:
    """A module's commands, as a Typer app the root joins (`add_typer`)."""
    return typer.Typer(cls=NexusGroup, **kwargs)


def command(
    commands: typer.Typer, *args: Any, **kwargs: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`commands.command` with the help's look and the error handler applied."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        commands.command(*args, cls=NexusCommand, **kwargs)(handle_errors(fn))
        return fn

    return register


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """`k=v` options into a dict; a bad pair is a usage error naming the option."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--{what} expects KEY=VALUE, got '{item}'.")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_metrics(values: list[str] | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in parse_pairs(values, "metric").items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise UsageError(f"--metric {key} must be a number, got '{value}'.") from None
    return metrics


def parse_params(values: list[str] | None) -> dict[str, Any]:
    """Numbers, booleans and null are read as JSON; anything else stays a string."""
    params: dict[str, Any] = {}
    for key, value in parse_pairs(values, "param").items():
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        params[key] = parsed if not isinstance(parsed, dict | list) else value
    return params
