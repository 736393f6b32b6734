"""Lifecycle commands: promote, archive, approve, reject, lineage, history."""

from __future__ import annotations

from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import JsonOption, KeyOption, command, commit_hint, group
from control_plane.metadata import ModelEntry
from control_plane.registry import Registry

RefArgument = Annotated[str, typer.Argument(help="latest, staging, production or a commit prefix.")]
ModelArgument = Annotated[str, typer.Argument(help="The model.")]


commands = group()


@command(commands, "promote")
def promote(
    ref: RefArgument,
    model_name: ModelArgument,
    stage: Annotated[str, typer.Option(help="staging or production.")],
    archive_previous: Annotated[
        bool, typer.Option("--archive-previous", help="Archive the version that held the stage.")
    ] = False,
) -> None:
    """Give a version the staging or production stage (the holder before loses it)."""
    entry, previous = Registry().promote(ref, model_name, stage, archive_previous=archive_previous)
    before = ""
    if previous is not None:
        before = f" ({previous.short_hash} {'archived' if archive_previous else 'lost it'})"
    ui.info(f"{entry.label} is now in {stage}{before}.")
    commit_hint("Promote model")


@command(commands, "archive")
def archive(ref: RefArgument, model_name: ModelArgument) -> None:
    """Archive a version (it stays stored and loadable)."""
    entry = Registry().archive(ref, model_name)
    ui.info(f"{entry.label} is archived.")


@command(commands, "approve")
def approve(ref: RefArgument, model_name: ModelArgument, key: KeyOption = None) -> None:
    """Mark a version approved (needed for production when require_approval is on); with a
    key (--key or signing_key) the approval is a signed statement."""
    entry = Registry().approve(ref, model_name, key=key)
    ui.info(f"{entry.label} is approved{_signed_by(entry)}.")


@command(commands, "reject")
def reject(
    ref: RefArgument,
    model_name: ModelArgument,
    reason: Annotated[str, typer.Option(help="Why it was rejected.")],
    key: KeyOption = None,
) -> None:
    """Mark a version rejected, with a reason (signed, as approve is, given a key)."""
    entry = Registry().reject(ref, model_name, reason, key=key)
    ui.info(f"{entry.label} is rejected{_signed_by(entry)}: {reason}")


def _signed_by(entry: ModelEntry) -> str:
    """Whether this decision was signed: the last event is the signed statement's."""
    last = (entry.history or [{}])[-1]
    signed = last.get("what") == "signed_approval" and entry.approval
    return f" (signed by {entry.approval['signer']})" if signed and entry.approval else ""


@command(commands, "lineage")
def lineage(
    model_ref: Annotated[str, typer.Argument(help="MODEL@REF, e.g. resnet@a1b2c3d.")],
    as_json: JsonOption = False,
) -> None:
    """Show a version's ancestors and descendants."""
    tree = Registry().lineage(model_ref)
    if as_json:
        ui.print_json(tree)
    else:
        ui.lineage_tree(tree)


@command(commands, "history")
def history(model_name: ModelArgument, as_json: JsonOption = False) -> None:
    """Every change of stage, status or latest of a model's versions."""
    events = Registry().history(model_name)
    if as_json:
        ui.print_json(events)
    else:
        ui.history_table(model_name, events)
