"""Team commands: init, resolve, aliases, delete and gc (the merge driver is in launcher.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import (
    JsonOption,
    NexusCommand,
    NexusGroup,
    command,
    commit_hint,
    group,
    handle_errors,
)
from control_plane.core.errors import UsageError
from control_plane.core.units import human_size, parse_duration
from control_plane.registry import Registry
from control_plane.registry.conflicts import ATTRIBUTE

commands = group()


@command(commands, "init")
def init() -> None:
    """Set up this clone: ignore .nexus/ and install the merge driver for .nexus_meta.json."""
    registry = Registry()
    registry.init()
    ui.info(f"nexus is set up in {registry.root}:")
    ui.info(f"  .gitattributes: {ATTRIBUTE}   (commit it, once per repository)")
    ui.info("  .git/config:    merge.nexus.driver (each clone's own; every nexus write sets it)")
    ui.info("Branches that each store, promote or delete now merge without conflicts.")


@command(commands, "resolve")
def resolve(as_json: JsonOption = False) -> None:
    """Merge a conflicted or hand-merged .nexus_meta.json by nexus's merge rules."""
    outcome = Registry().resolve_conflicts()
    if outcome is None:
        if as_json:
            ui.print_json({"resolved": False})
        else:
            ui.info(".nexus_meta.json has no conflict to resolve.")
        return
    inputs, result = outcome
    document = result.document
    if as_json:
        ui.print_json(
            {
                "resolved": True,
                "from": inputs.source,
                "versions": len(document.entries),
                "deleted": len(document.deleted),
                "notes": result.notes,
            }
        )
        return
    for note in result.notes:
        ui.warning(note)
    ui.info(
        f"Resolved .nexus_meta.json from {inputs.source}: {len(document.entries)} versions, "
        f"{len(document.deleted)} deleted; both sides' history kept."
    )
    ui.info("Commit the metadata: git add .nexus_meta.json, then finish the merge (git commit).")


alias_app = typer.Typer(
    help="Named aliases of versions (champion, candidate, …), usable wherever a REF is.",
    no_args_is_help=True,
    cls=NexusGroup,
)


@alias_app.command("set", cls=NexusCommand)
@handle_errors
def alias_set(
    model_ref: Annotated[str, typer.Argument(help="MODEL@REF, e.g. my_model@v3.")],
    alias: Annotated[str, typer.Argument(help="The alias, e.g. champion.")],
) -> None:
    """Give a version an alias (unique per model: the version that had it loses it)."""
    entry, previous = Registry().set_alias(model_ref, alias)
    moved = f" (moved from v{previous.version})" if previous not in (None, entry) else ""
    ui.info(f"{entry.model_name}@{alias} is v{entry.version} ({entry.short_hash}){moved}.")
    commit_hint(f"Set alias {alias}")


@alias_app.command("rm", cls=NexusCommand)
@handle_errors
def alias_rm(
    model_alias: Annotated[str, typer.Argument(help="MODEL@ALIAS, e.g. my_model@champion.")],
) -> None:
    """Remove an alias."""
    model, at, alias = model_alias.partition("@")
    if not at or not model or not alias:
        raise UsageError(f"expected MODEL@ALIAS, not '{model_alias}'.")
    entry = Registry().remove_alias(model, alias)
    ui.info(f"{model}@{alias} is gone (it was v{entry.version}, {entry.short_hash}).")


@alias_app.command("list", cls=NexusCommand)
@handle_errors
def alias_list(
    model_name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every alias and the version it names."""
    named = sorted(
        (
            (e.model_name, alias, e)
            for e in Registry().list(model_name)
            for alias in e.aliases or ()
        ),
        key=lambda row: row[:2],
    )
    if as_json:
        ui.print_json(
            [
                {"model": m, "alias": a, "version": e.version, "commit_hash": e.commit_hash}
                for m, a, e in named
            ]
        )
        return
    if not named:
        ui.info("No aliases. Set one with 'nexus alias set MODEL@REF NAME'.")
    for model, alias, entry in named:
        ui.info(f"{model}@{alias}  v{entry.version}  {entry.short_hash}")


@command(commands, "delete")
def delete(
    model_ref: Annotated[str, typer.Argument(help="MODEL@REF, e.g. my_model@v3.")],
    force: Annotated[
        bool, typer.Option("--force", help="Delete even the version in production.")
    ] = False,
) -> None:
    """Remove a version from the metadata; its bytes stay until 'nexus gc'."""
    entry, successor = Registry().delete(model_ref, force=force)
    ui.info(f"Deleted {entry.model_name} v{entry.version} ({entry.short_hash}) from the metadata.")
    if successor is not None:
        ui.info(f"Latest {entry.model_name} is now v{successor.version} ({successor.short_hash}).")
    ui.info("Its bytes stay in the store until 'nexus gc' finds nothing reaches them.")
    commit_hint("Delete model version")


@command(commands, "gc")
def gc(
    grace: Annotated[
        str, typer.Option(help="Keep unreferenced objects younger than this (7d, 12h, 0).")
    ] = "7d",
    yes: Annotated[bool, typer.Option("--yes", help="Delete; without it, only show.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete stored objects no branch, tag or remote ref reaches (a dry run without --yes)."""
    try:
        grace_s = parse_duration(grace)
    except ValueError:
        raise UsageError(
            f"--grace expects a duration like 7d, 12h, 30m or 0, not '{grace}'."
        ) from None
    registry = Registry()
    plan = registry.gc_plan(grace_s)
    outcome = registry.gc_collect(plan) if yes else None
    if as_json:
        ui.print_json(
            {
                "sources": plan.sources,
                "models": plan.models,
                "scanned": plan.scanned,
                "referenced": plan.referenced,
                "young": plan.young,
                "candidates": [
                    {"key": c.key, "size": c.size, "modified": c.modified} for c in plan.candidates
                ],
                "deleted": [d.key for d in outcome.deleted] if outcome else [],
                "kept": outcome.kept if outcome else [],
            }
        )
        return
    ui.info(
        f"Read .nexus_meta.json from {len(plan.sources)} "
        f"place{'' if len(plan.sources) == 1 else 's'} ({', '.join(plan.sources[:6])}"
        f"{', …' if len(plan.sources) > 6 else ''}); scanned {plan.scanned} objects of "
        f"{len(plan.models)} models: {plan.referenced} referenced, {plan.young} unreferenced "
        f"but younger than {grace}."
    )
    if not plan.candidates:
        ui.info("Nothing to delete.")
        return
    for info in plan.candidates[:20]:
        ui.info(f"  {registry.backend.uri(info.key)}  {human_size(info.size)}")
    if len(plan.candidates) > 20:
        ui.info(f"  … and {len(plan.candidates) - 20} more")
    size = human_size(plan.candidate_bytes)
    if outcome is None:
        ui.info(f"Would delete {len(plan.candidates)} objects ({size}). Run with --yes to delete.")
        return
    ui.info(f"Deleted {len(outcome.deleted)} objects ({human_size(outcome.deleted_bytes)}).")
    if outcome.kept:
        ui.info(f"Kept {len(outcome.kept)} that were reused or rewritten while gc ran.")
