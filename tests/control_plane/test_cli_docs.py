"""docs/cli.md is true to the code: every `nexus` command and option it names exists, and
every one that exists is in it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from control_plane.cli import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def commands() -> dict[str, set[str]]:
    """Each command's path (`keys create`) and its long options, from the CLI itself."""
    root = typer.main.get_command(app)
    context = type(root.make_context("nexus", [], resilient_parsing=True))

    def walk(command: Any, path: list[str], ctx: Any) -> Iterator[tuple[str, set[str]]]:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    yield from walk(sub, [*path, name], context(sub, parent=ctx, info_name=name))
            return
        options = {
            name
            for param in command.params
            if param.param_type_name == "option" and not param.hidden
            for name in param.opts
            if name.startswith("--") and name != "--help"
        }
        yield " ".join(path), options

    return dict(walk(root, [], context(root, info_name="nexus")))


def documented() -> dict[str, set[str]]:
    """Each table row's command (the words after `nexus` up to an argument) and options."""
    rows: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = line.split(" | ")
        found = re.match(r"\| `nexus ((?:[a-z][a-z-]* ?)+)", line)
        if found is None:
            continue
        path = found.group(1).strip()
        assert path not in rows, f"docs/cli.md documents `nexus {path}` twice"
        rows[path] = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", " | ".join(cells)))
    return rows


def test_every_command_in_the_docs_exists_and_every_command_is_documented() -> None:
    assert set(documented()) == set(commands())


def test_every_option_in_the_docs_exists_and_every_option_is_documented() -> None:
    real, docs = commands(), documented()
    for path, options in real.items():
        named = {o for o in docs[path] if not _elsewhere(o, path)}
        assert named == options, f"nexus {path}: documented {sorted(named)}, has {sorted(options)}"


def _elsewhere(option: str, path: str) -> bool:
    """Options of other programs a row mentions (`nexus-proxy --api-keys FILE`)."""
    return path.startswith("keys") and option in {"--api-keys", "--tokens"}
