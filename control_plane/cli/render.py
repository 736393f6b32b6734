"""Everything the terminal sees: the only module that imports rich.

Tables, progress bars, errors and JSON. Large listings and non-terminal output
take a plain fast path, so `nexus list` on 100,000 entries stays well under a
second.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson
from rich.console import Console

from control_plane.core.errors import NexusError
from control_plane.core.hardware import Requirements
from control_plane.core.hashing import ProgressCallback
from control_plane.core.units import human_size
from control_plane.metadata import ModelEntry
from control_plane.metadata.listing import DISPLAY_FIELDS, Summary
from control_plane.metadata.rendered import RICH_TABLE_MAX_ROWS
from nexus_common.signature import Signature

if TYPE_CHECKING:
    from rich.progress import Progress

    from control_plane.registry.trust.check import TrustReport

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_HEADERS = ("MODEL", "VERSION", "COMMIT", "SIZE", "STORED", "LATEST", "STAGE", "STATUS", "FORMAT")


def error(exc: NexusError) -> None:
    err_console.print(f"[bold red]Error:[/] {_escape(exc.message)}")
    if exc.hint:
        err_console.print(f"[dim]Hint: {_escape(exc.hint)}[/]")


def warning(message: str) -> None:
    err_console.print(f"[yellow]Warning:[/] {_escape(message)}")


def info(message: str) -> None:
    console.print(message)


_CHILD_STYLES = {"model": "cyan", "proxy": "magenta"}


def child_log(name: str, line: str) -> None:
    """One line of a child server's log, prefixed with its name."""
    style = _CHILD_STYLES.get(name, "blue")
    err_console.print(f"[{style}]{name:>5} |[/] {_escape(line)}")


def print_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data) + b"\n")
    sys.stdout.flush()


_DEPLOYMENT_HEADERS = ("SEQ", "TIME", "EVENT", "VERSION", "DETAILS")


def deployment_header(data: dict[str, Any], *, live: bool) -> None:
    """Which ref the server follows and what it serves; with `live`, the column names too."""
    serving = data.get("serving") or {}
    now = f"{serving.get('name')}@{str(serving.get('commit_hash', ''))[:7]}" if serving else "none"
    follows = "following" if data.get("following") else "pinned to"
    console.print(f"Serving {_escape(now)}, {follows} {_escape(str(data.get('ref')))}.")
    if live:
        console.print("  ".join(_DEPLOYMENT_HEADERS), style="bold")


def deployment_table(data: dict[str, Any]) -> None:
    deployment_header(data, live=False)
    events = data.get("events") or []
    if not events:
        console.print("No rollout events yet.")
        return
    from rich.table import Table

    table = Table(*_DEPLOYMENT_HEADERS, header_style="bold")
    for event in events:
        table.add_row(*(_escape(cell) for cell in _event_cells(event)))
    console.print(table)


def deployment_event_line(event: dict[str, Any]) -> None:
    console.print("  ".join(_escape(cell) for cell in _event_cells(event)))


def _event_cells(event: dict[str, Any]) -> tuple[str, ...]:
    version = event.get("version") or {}
    label = f"{version.get('name')}@{str(version.get('commit_hash', ''))[:7]}" if version else ""
    details = [str(event["reason"])] if event.get("reason") else []
    if event.get("event") == "canary":
        details.append(
            f"{event.get('percent')}% of batches, judged after {event.get('min_items')} items "
            f"and {event.get('min_seconds')} s"
        )
    figures = event.get("figures") or {}
    for side in ("candidate", "current"):
        if side in figures:
            f = figures[side]
            details.append(
                f"{side}: {f.get('items')} items, {float(f.get('error_rate') or 0):.1%} errors, "
                f"p99 {f.get('p99_ms')} ms"
            )
    if "load_seconds" in event:
        details.append(f"loaded in {event['load_seconds']} s")
    when = str(event.get("time", ""))[11:23]
    return (str(event.get("seq", "")), when, str(event.get("event", "")), label, "; ".join(details))


def entries_table(rows: Sequence[Summary]) -> bytes | None:
    """Print the versions; returns the plain text printed (None for a rich table), which
    `nexus list` caches."""
    if not rows:
        console.print("No models stored yet. Run 'nexus store PATH MODEL_NAME'.")
        return None
    display = cast(list[tuple[str, ...]], [row[:DISPLAY_FIELDS] for row in rows])
    if console.is_terminal and len(rows) <= RICH_TABLE_MAX_ROWS:
        from rich.table import Table

        table = Table(*_HEADERS, header_style="bold")
        for cells in display:
            table.add_row(*(_escape(cell) for cell in cells))
        console.print(table)
        return None
    # Plain fast path, column-wise so the loops stay in C.
    columns = list(zip(*display, strict=True))
    widths = [max(len(h), max(map(len, col))) for h, col in zip(_HEADERS, columns, strict=True)]
    template = "  ".join(f"%-{w}s" for w in widths[:-1]) + "  %s"
    lines = [template % _HEADERS]
    lines.extend(map(template.__mod__, display))
    text = ("\n".join(lines) + "\n").encode()
    sys.stdout.flush()
    sys.stdout.buffer.write(text)
    sys.stdout.flush()
    return text


def entry_details(entry: ModelEntry) -> None:
    data = entry.to_dict()
    width = max(len(key) for key in data)
    for key, value in data.items():
        shown = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
        if key == "file_size":
            shown = f"{value} ({human_size(value)})"
        elif key in ("signature", "approval") and isinstance(value, dict):
            decision = f"{value['decision']} " if value.get("decision") else ""
            shown = f"{decision}by {value.get('signer')} (key {str(value.get('key'))[:12]}…)"
        elif key == "tensors" and isinstance(value, dict):
            shown = Signature.from_json(value).summary()
        elif key == "requires":
            shown = Requirements.from_json(value).describe()
        console.print(f"[bold]{key:<{width}}[/]  {_escape(shown)}")


def trust_lines(report: TrustReport, indent: str = "") -> None:
    """The signature's and the approval's verdicts, one line each."""
    for verdict in (report.signature, report.approval):
        colour = "red" if verdict.error else ("green" if verdict.present else "dim")
        text = _escape(verdict.describe())
        console.print(f"{indent}[bold]{verdict.what:<9}[/]  [{colour}]{text}[/]")


def lineage_tree(data: dict[str, Any]) -> None:
    from rich.tree import Tree

    root = Tree(f"[bold]{data['model']}@{data['commit_hash'][:7]}[/]")
    if data["ancestors"]:
        _grow(root.add("ancestors"), data["ancestors"], "parents")
    if data["descendants"]:
        _grow(root.add("descendants"), data["descendants"], "children")
    if not data["ancestors"] and not data["descendants"]:
        root.add("[dim]no recorded lineage[/]")
    console.print(root)


def _grow(branch: Any, nodes: list[dict[str, Any]], key: str) -> None:
    for node in nodes:
        kind = f" [dim]({node['lineage_type']})[/]" if node.get("lineage_type") else ""
        missing = " [red](not in this metadata)[/]" if node.get("missing") else ""
        child = branch.add(f"{node['model']}@{node['commit_hash'][:7]}{kind}{missing}")
        _grow(child, node.get(key, []), key)


def history_table(model_name: str, events: Sequence[dict[str, Any]]) -> None:
    if not events:
        console.print(f"No recorded changes for {model_name}.")
        return
    from rich.table import Table

    table = Table("WHEN", "COMMIT", "WHAT", "FROM", "TO", "WHO", header_style="bold")
    for event in events:
        table.add_row(
            *(
                _escape(str(v))
                for v in (
                    str(event.get("when", ""))[:19].replace("T", " "),
                    str(event.get("commit_hash", ""))[:7],
                    event.get("what", ""),
                    event.get("from"),
                    event.get("to"),
                    event.get("who") or "",
                )
            )
        )
    console.print(table)


@contextlib.contextmanager
def transfer_progress(enabled: bool) -> Iterator[_RichReporter | None]:
    """A Rich progress display (on stderr) when enabled and both stdout and stderr are terminals."""
    if not enabled or not (console.is_terminal and err_console.is_terminal):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description:<11}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield _RichReporter(progress)


class _RichReporter:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def start(self, description: str, total: int) -> ProgressCallback:
        task = self._progress.add_task(description, total=total or None)

        def advance(n: int) -> None:
            self._progress.advance(task, n)

        return advance


def _escape(text: str) -> str:
    return text.replace("[", "\\[")
