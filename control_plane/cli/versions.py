"""The version commands: store, list, load, rollback, show and verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import (
    JsonOption,
    KeyOption,
    ModelNameOption,
    QuietOption,
    command,
    commit_hint,
    group,
    parse_metrics,
    parse_pairs,
    parse_params,
)
from control_plane.core.errors import UsageError
from control_plane.core.hardware import Requirements
from control_plane.core.units import human_size
from control_plane.metadata import rendered
from control_plane.registry import Registry, StoreResult, query
from control_plane.registry.lineage import split_model_ref
from nexus_common.signature import Signature

commands = group()

# How a version is served: its signature, its task, the hardware it needs (`nexus store`).
SignatureFileOption = Annotated[
    Path | None,
    typer.Option(help="The model's inputs and outputs (JSON/YAML); checked against it."),
]
ExampleInputOption = Annotated[
    Path | None,
    typer.Option(help="An .npz of named arrays: a TorchScript model is run on it once."),
]
HandlerOption = Annotated[
    str | None,
    typer.Option(help="module:Class serving it: the signature it declares is recorded."),
]
TaskOption = Annotated[
    str | None,
    typer.Option(help="A transformers folder's task, instead of the one its config implies."),
]
RequiresOption = Annotated[
    str | None, typer.Option(help="The device it needs: cuda (servers without one refuse it).")
]
MinMemoryOption = Annotated[
    str | None, typer.Option(help="The device memory it needs, e.g. 16GiB.")
]
ComputeCapabilityOption = Annotated[
    str | None, typer.Option(help="The GPU compute capability it needs, e.g. 8.0.")
]


@command(commands, "store")
def store(
    path: Annotated[Path, typer.Argument(help="The model file, or a directory (one version).")],
    model_name: Annotated[str, typer.Argument(help="Name to store it under.")],
    message: Annotated[str | None, typer.Option("--message", help="What changed.")] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="KEY=NUMBER, repeatable.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=VALUE, repeatable.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    owner: Annotated[str | None, typer.Option(help="Who owns this model.")] = None,
    training_data: Annotated[
        str | None, typer.Option(help="URI of the dataset version it was trained on.")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="The model it starts from.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training config (YAML/JSON): hashed, kept as params.")
    ] = None,
    parent: Annotated[
        list[str] | None, typer.Option(help="MODEL@REF it derives from; repeatable.")
    ] = None,
    lineage_type: Annotated[
        str | None, typer.Option(help="fine_tune, distillation or merge.")
    ] = None,
    allow_dirty: Annotated[
        bool, typer.Option("--allow-dirty", help="Store despite uncommitted changes (recorded).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Store even if dedup_by_config finds a twin.")
    ] = False,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign the version (with --key or signing_key).")
    ] = False,
    key: KeyOption = None,
    signature: SignatureFileOption = None,
    example_input: ExampleInputOption = None,
    handler: HandlerOption = None,
    task: TaskOption = None,
    requires: RequiresOption = None,
    min_memory: MinMemoryOption = None,
    compute_capability: ComputeCapabilityOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upload a model file or directory and link it to the current Git commit; record its
    signature (an ONNX graph's own, or learned with --example-input, or --signature)."""
    registry = Registry()
    with ui.transfer_progress(not quiet and not as_json) as progress:
        result = registry.store(
            path,
            model_name,
            message=message,
            metrics=parse_metrics(metric),
            params=parse_params(param),
            tags=parse_pairs(tag, "tag"),
            owner=owner,
            training_data=training_data,
            base_model=base_model,
            config_file=config,
            parents=parent or (),
            lineage_type=lineage_type,
            allow_dirty=allow_dirty,
            force=force,
            sign=sign,
            signing_key=key,
            signature=signature,
            example_input=example_input,
            handler=handler,
            requires=Requirements.parse(requires, min_memory, compute_capability),
            task=task,
            progress=progress,
        )
    _report_store(registry, result, as_json)


def _report_store(registry: Registry, result: StoreResult, as_json: bool) -> None:
    for text in result.warnings:
        ui.warning(text)
    if not as_json:
        for text in result.notes:
            ui.info(text)
    entry = result.entry
    if as_json:
        ui.print_json({"already_stored": result.already_stored, "entry": entry.to_dict()})
        return
    if result.already_stored:
        ui.info(f"{entry.label} is already stored with these bytes; nothing to do.")
        return
    note = "" if result.uploaded else " (the store already held these bytes)"
    ui.info(f"Stored [bold]{entry.model_name}[/] at commit [bold]{entry.commit_hash}[/]{note}")
    ui.info(f"  uri:  {registry.backend.uri(entry.storage_uri)}")
    ui.info(f"  size: {human_size(entry.file_size)}   sha256: {entry.sha256}")
    if entry.tensors:
        ui.info(f"  signature: {Signature.from_json(entry.tensors).summary()}")
    if entry.task:
        ui.info(f"  {entry.format}: {entry.architecture or '?'}, served for {entry.task}")
    if entry.requires:
        ui.info(f"  requires: {Requirements.from_json(entry.requires).describe()}")
    if entry.signature:
        ui.info(f"  signed by {entry.signature['signer']} (key {entry.signature['key'][:12]}…)")
    commit_hint("Store model")


@command(commands, "list")
def list_(
    model_name: ModelNameOption = None,
    stage: Annotated[str | None, typer.Option(help="staging, production or archived.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending_review, approved or rejected.")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="e.g. 'accuracy>=0.9'; repeatable.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE; repeatable.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's versions.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Only versions of this base.")] = None,
    since: Annotated[str | None, typer.Option(help="Stored on or after DATE.")] = None,
    sort: Annotated[str | None, typer.Option(help="Sort by this metric, highest first.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N versions.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List stored versions, newest first, with optional filters."""
    # Cheap, selective fields first; metrics and tags are decoded per row, so they go last.
    filters = [
        *([query.stage(stage)] if stage else []),
        *([query.status(status)] if status else []),
        *([query.owner(owner)] if owner else []),
        *([query.base_model(base_model)] if base_model else []),
        *([query.since(since)] if since else []),
        *(query.tag(t) for t in tag or []),
        *(query.metric(m) for m in metric or []),
    ]
    registry = Registry()
    if as_json:
        entries = registry.list(model_name, filters=filters, sort_metric=sort, limit=limit)
        ui.print_json([entry.to_dict() for entry in entries])
    else:
        data = registry.metadata.read_bytes()  # read once: the rows and the cache key agree
        rows = registry.list_summaries(
            model_name, filters=filters, sort_metric=sort, limit=limit, data=data
        )
        text = ui.entries_table(rows)
        if text and not (model_name or filters or sort or limit):
            rendered.save(registry.root, data, text, len(rows))


@command(commands, "load")
def load(
    ref: Annotated[str, typer.Argument(help="'latest', a commit hash or a 4+ char prefix.")],
    dest: Annotated[Path, typer.Argument(help="File or directory to write to.")],
    model_name: ModelNameOption = None,
    quiet: QuietOption = False,
) -> None:
    """Download a version, verify its size and sha256, and write it to DEST.

    A directory version is restored whole into DEST (new or empty), every file verified."""
    with ui.transfer_progress(not quiet) as progress:
        entry, path = Registry().load(ref, dest, model_name=model_name, progress=progress)
    ui.info(f"Loaded [bold]{entry.label}[/] to {path} ({human_size(entry.file_size)}, verified)")


@command(commands, "rollback")
def rollback(
    ref: Annotated[str, typer.Argument(help="The version to make latest.")],
    model_name: Annotated[str, typer.Argument(help="The model.")],
) -> None:
    """Make an earlier version the latest; nothing is deleted."""
    result = Registry().rollback(ref, model_name)
    if result.previous is result.entry:
        ui.info(f"{result.entry.label} is already the latest version; nothing changed.")
        return
    before = f" (was {result.previous.short_hash})" if result.previous else ""
    ui.info(f"Latest [bold]{model_name}[/] is now {result.entry.short_hash}{before}.")
    commit_hint("Roll back model")


@command(commands, "show")
def show(
    ref: Annotated[str, typer.Argument(help="'latest', a commit hash or a 4+ char prefix.")],
    model_name: ModelNameOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one version in full, with its signature's and approval's verdicts."""
    registry = Registry()
    entry = registry.resolve(ref, model_name)
    report = registry.trusting.report(entry)
    if as_json:
        ui.print_json({**entry.to_dict(), **({"trust": report.to_dict()} if report else {})})
    else:
        ui.entry_details(entry)
        if report is not None:
            ui.trust_lines(report)


@command(commands, "verify")
def verify(
    ref: Annotated[
        str | None, typer.Argument(help="One version; default: every stored version.")
    ] = None,
    model_name: ModelNameOption = None,
    signature: Annotated[
        Path | None,
        typer.Option(help="A bundle made elsewhere (model_signing sign) to check REF against."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Download stored versions and check their size, sha256, signature and approval; exit 3
    if any fails."""
    registry = Registry()
    if signature is not None:
        _verify_signature_file(registry, ref, model_name, signature, as_json)
        return
    results = registry.verify(ref, model_name)
    failed = [r for r in results if r.error is not None]
    if as_json:
        ui.print_json(
            [
                {
                    "model_name": r.entry.model_name,
                    "commit_hash": r.entry.commit_hash,
                    "ok": r.error is None,
                    "error": r.error.message if r.error else None,
                    **(r.trust.to_dict() if r.trust else {}),
                }
                for r in results
            ]
        )
    else:
        for r in results:
            error = f"  {r.error}" if r.error else ""
            ui.info(f"{'FAILED' if r.error else 'ok':<6}  {r.entry.label}{error}")
            if r.trust is not None:
                ui.trust_lines(r.trust, indent="        ")
        ui.info(f"{len(results) - len(failed)} of {len(results)} versions verified.")
    if failed:
        raise typer.Exit(max(r.error.exit_code for r in failed if r.error))


def _verify_signature_file(
    registry: Registry, ref: str | None, model_name: str | None, path: Path, as_json: bool
) -> None:
    if ref is None:
        raise UsageError("--signature checks one version: name it, e.g. my_model@v3.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}.") from None
    model_ref = ref if "@" in ref or model_name is None else f"{model_name}@{ref}"
    model, version = split_model_ref(model_ref)  # a bare model name: its latest
    entry = registry.resolve(version, model)
    verdict = registry.trusting.check_bundle(entry, data)  # made elsewhere: `model_signing sign`
    if as_json:
        ui.print_json(
            {
                "model_name": entry.model_name,
                "commit_hash": entry.commit_hash,
                "signature": verdict.to_dict(),
            }
        )
    else:
        ui.info(f"{entry.label}  signature {path}: {verdict.describe()}")
    if verdict.error is not None:
        raise typer.Exit(verdict.error.exit_code)
