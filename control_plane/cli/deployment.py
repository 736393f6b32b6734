"""`nexus deployment URL`: a model server's rollouts, as a table, JSON, or followed live."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import JsonOption, command, group
from control_plane.serving.deployment import fetch_deployment

WATCH_INTERVAL_S = 1.0


commands = group()


@command(commands, "deployment")
def deployment(
    url: Annotated[str, typer.Argument(help="The model server, e.g. http://127.0.0.1:8000.")],
    as_json: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep printing new events (Ctrl-C stops).")
    ] = False,
) -> None:
    """Show a model server's rollout log: loads, canary windows, promotions, rollbacks.

    With --watch, new events are printed as they happen (one JSON object a line with --json).
    """
    data = fetch_deployment(url)
    if as_json and not watch:
        ui.print_json(data)
        return
    if not watch:
        ui.deployment_table(data)
        return
    if not as_json:  # JSON lines only, for scripts
        ui.deployment_header(data, live=True)
    seen = 0
    while True:
        for event in data["events"]:
            if as_json:
                ui.print_json_line(event)
            else:
                ui.deployment_event_line(event)
            seen = max(seen, int(event.get("seq", seen)))
        time.sleep(WATCH_INTERVAL_S)
        data = fetch_deployment(url, since=seen)
