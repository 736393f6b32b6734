"""The `nexus` app: every group of commands joined with `add_typer` (no registration by
import side effect), the `--version` option, and the console script's entry point."""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from control_plane.cli import (
    deployment,
    events,
    keys,
    lifecycle,
    serve,
    team,
    trust,
    versions,
)
from control_plane.cli import render as ui
from control_plane.cli import ui as web_ui
from control_plane.cli.base import NexusGroup


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        ui.info(f"nexus {version('nexusml')}")
        raise typer.Exit()


app = typer.Typer(
    name="nexus",
    help="Version model binaries against Git commits, and serve them.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
    add_completion=True,
    cls=NexusGroup,
)


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Version model binaries against Git commits, and serve them."""


for commands in (
    versions.commands,
    deployment.commands,
    lifecycle.commands,
    serve.commands,
    team.commands,
    trust.commands,
    web_ui.commands,
):
    app.add_typer(commands)
app.add_typer(events.events_app, name="events")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(team.alias_app, name="alias")


def main() -> None:
    """Console-script entry point."""
    # A short-lived process building 100,000s of acyclic objects (a large metadata file)
    # gains nothing from cyclic garbage collection but pays ~2x for it.
    gc.disable()
    app(prog_name="nexus")
