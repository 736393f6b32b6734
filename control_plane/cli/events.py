"""`nexus events`: the registry's events, and the outbox of those a webhook has not taken."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import JsonOption, NexusCommand, NexusGroup, handle_errors
from control_plane.registry import Registry

events_app = typer.Typer(
    help="An event per registry change (CloudEvents), to events_file and webhook_url.",
    no_args_is_help=True,
    cls=NexusGroup,
)


@events_app.command("list", cls=NexusCommand)
@handle_errors
def list_events(
    limit: Annotated[int, typer.Option(help="The last N events of the events file.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent events (from events_file) and the outbox (events a webhook has yet to take)."""
    outlet = Registry().events
    recent, waiting = outlet.recent(limit), outlet.waiting()
    if as_json:
        ui.print_json({"events": recent, "outbox": waiting})
        return
    if not outlet.active:
        ui.info("No sink is set: add events_file or webhook_url to .nexusrc.")
    for event in recent:
        data = event.get("data", {})
        model, version = data.get("model", ""), data.get("version")
        what = f"{model} v{version}" if version else (model or event.get("subject", ""))
        ui.info(f"{event['time'][:19]}  {event['type'].removeprefix('dev.nexusml.'):22} {what}")
    if waiting:
        ui.warning(f"{len(waiting)} events wait in the outbox for {outlet.webhook_url}:")
        for item in waiting:
            when = datetime.fromtimestamp(item["next_try"]).isoformat(timespec="seconds")
            ui.info(
                f"  {item['event']['type']}  {item['attempts']} tries, next {when}: "
                f"{item.get('error', '')}"
            )


@events_app.command("flush", cls=NexusCommand)
@handle_errors
def flush() -> None:
    """Deliver the outbox to the webhook now, whatever its backoff says."""
    outlet = Registry().events
    done = outlet.flush()
    ui.info(f"Delivered {done.sent}; {done.waiting} still waiting.")
    if done.waiting:
        raise typer.Exit(1)
