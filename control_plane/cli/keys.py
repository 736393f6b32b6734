"""`nexus keys`: API keys for the proxy (`nexus-proxy --api-keys FILE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import JsonOption, NexusCommand, NexusGroup, handle_errors
from control_plane.core.errors import UsageError
from control_plane.web.roles import Role
from control_plane.web.tokens import (
    add_token,
    is_token_file,
    read_tokens,
    revoke_token,
)
from nexus_common.keyfiles import add_key, read_records, revoke_key

keys_app = typer.Typer(
    help="API keys for the proxy (a name, a rate, a burst) and, with --role, tokens for the "
    "registry's web server; the files keep digests only.",
    no_args_is_help=True,
    cls=NexusGroup,
)

FileOption = Annotated[Path, typer.Option("--file", help="The key file the proxy reads.")]


@keys_app.command("create", cls=NexusCommand)
@handle_errors
def create(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. team-search.")],
    file: FileOption,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 100.0,
    burst: Annotated[
        float | None, typer.Option(help="Requests at once (default: one second's worth).")
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="Allowed model; repeatable.")] = None,
    role: Annotated[
        str | None,
        typer.Option(help="A registry token instead: reader, maintainer, approver or admin."),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="With --role: the email its commits are authored with.")
    ] = None,
) -> None:
    """Make a key (or, with --role, a registry token), add its record to FILE and print it
    once, on its own line."""
    if role is not None:
        try:
            chosen = Role.named(role)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        key = add_token(file, name, chosen, email or f"{name}@users.noreply")
    else:
        key = add_key(file, name, rate, burst, tuple(model or ()))
    what = "token" if role is not None else "key"
    ui.warning(f"the {what} for '{name}' is printed once; it is not stored anywhere in clear.")
    print(key)  # stdout, alone: `KEY=$(nexus keys create …)`


@keys_app.command("revoke", cls=NexusCommand)
@handle_errors
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")], file: FileOption) -> None:
    """Remove a key or token; a running proxy or registry refuses it within a second."""
    (revoke_token if is_token_file(file) else revoke_key)(file, name)
    ui.info(f"Revoked '{name}' in {file}.")


@keys_app.command("list", cls=NexusCommand)
@handle_errors
def list_keys(file: FileOption, as_json: JsonOption = False) -> None:
    """The keys' names, rates and models, or the tokens' names and roles (never the keys)."""
    if is_token_file(file):
        tokens = read_tokens(file)
        if as_json:
            ui.print_json([{k: v for k, v in t.to_json().items() if k != "sha256"} for t in tokens])
        for token in [] if as_json else tokens:
            ui.info(f"{token.name}  {token.role.label}  {token.email}")
        return
    records = read_records(file)
    if as_json:
        ui.print_json([{k: v for k, v in r.to_json().items() if k != "sha256"} for r in records])
        return
    for r in records:
        models = f"  models: {', '.join(r.models)}" if r.models else ""
        ui.info(f"{r.name}  {r.rate:g}/s  burst {r.burst:g}{models}")
