"""`nexus sign` and `nexus keygen`: signatures in the OpenSSF model-signing format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import KeyOption, command, commit_hint, group
from control_plane.core.errors import UsageError
from control_plane.registry import Registry
from nexus_common.files import atomic_write

commands = group()


@command(commands, "sign")
def sign(
    model_ref: Annotated[str, typer.Argument(help="MODEL@REF, e.g. my_model@v3.")],
    key: KeyOption = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Also write the bundle here, for `model_signing verify`."),
    ] = None,
) -> None:
    """Sign a stored version: its model name, commit and the sha256 of every file.

    The bundle is stored beside the object and recorded in the entry; the bytes are not
    downloaded (the signature covers the sha256s every load checks)."""
    if "@" not in model_ref:
        raise UsageError(f"sign needs MODEL@REF, not '{model_ref}'.", hint="e.g. my_model@v3")
    entry, bundle = Registry().sign(model_ref, key=key)
    if output is not None:
        _write_atomically(output, bundle)
    assert entry.signature is not None
    ui.info(
        f"Signed [bold]{entry.label}[/] with {entry.signature['signer']}'s key "
        f"({entry.signature['key'][:12]}…)" + (f"; bundle written to {output}" if output else "")
    )
    commit_hint("Sign model")


@command(commands, "keygen")
def keygen(
    path: Annotated[Path, typer.Argument(help="The private key to write, e.g. ~/.nexus/me.key.")],
) -> None:
    """Make a signing key: PATH (private, mode 600) and PATH.pub (share it: trusted_keys)."""
    from control_plane.registry.trust.keys import generate

    path = path.expanduser()
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent} is not a directory.")
    public = generate(path)
    ui.info(f"Wrote {path} (keep it private) and {path}.pub (key {public.hint[:12]}…).")
    ui.info("Sign with: nexus sign MODEL@REF --key " + str(path) + "  (or signing_key in .nexusrc)")
    ui.info(f"Trust it: copy {path}.pub into the trusted_keys folder, named for its owner.")


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside `path`, then rename: never a partial file at the destination."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a directory.")
    atomic_write(path, data, durable=False)
