"""`nexus ui`: the registry on the web, for one person, on this machine."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import command, group
from control_plane.registry import Registry
from control_plane.web import DEFAULT_PORT

commands = group()


@command(commands, "ui")
def web_ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = DEFAULT_PORT,
    tokens: Annotated[
        Path | None,
        typer.Option(help="Token file (nexus keys create NAME --role ROLE): allows changes."),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open it in the default browser.")
    ] = False,
) -> None:
    """Browse the registry in a browser: models, versions, metrics, lineage, the audit log.

    Read-only without --tokens; with them, changes made on the pages are commits made as
    the signed-in token's owner. For a team, run `nexus-registry --host 0.0.0.0`."""
    from control_plane.web.__main__ import build_server
    from control_plane.web.settings import RegistrySettings

    root = Registry().root
    settings = RegistrySettings(workspace=root, tokens=tokens, host="127.0.0.1", port=port)
    server = build_server(settings)
    url = f"http://127.0.0.1:{port}/"
    ui.info(f"The registry of {root} on [bold]{url}[/] (Ctrl-C to stop)")
    if open_browser:
        webbrowser.open(url)
    server.run()
