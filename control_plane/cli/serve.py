"""`nexus serve`: the model server and the batching proxy, wired together, in one command."""

from __future__ import annotations

import json
import signal
from enum import StrEnum
from types import FrameType
from typing import Annotated

import typer

from control_plane.cli import render as ui
from control_plane.cli.base import ModelNameOption, command, group
from control_plane.core.errors import HardwareError, NotFoundError
from control_plane.core.hardware import Machine, Requirements, unmet
from control_plane.metadata import ModelEntry
from control_plane.registry import Registry
from control_plane.serving.supervisor import ServeOptions, Supervisor


class ProxyPolicy(StrEnum):
    """The proxy's policies by name (batch_proxy.policies.POLICIES; a test holds the two
    equal): `nexus serve` starts the proxy and imports none of it."""

    ADAPTIVE = "adaptive"
    EAGER = "eager"
    FIXED = "fixed"


commands = group()


@command(commands, "serve")
def serve(
    model_name: ModelNameOption = None,
    model_ref: Annotated[
        str, typer.Option("--ref", help="Version: latest, a commit hash or a 4+ char prefix.")
    ] = "latest",
    host: Annotated[str, typer.Option(help="Address the proxy listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Proxy port (clients POST /predict here).")] = 8080,
    model_port: Annotated[int, typer.Option(help="Model server port (127.0.0.1 only).")] = 8000,
    device: Annotated[str | None, typer.Option(help="cuda, cuda:N or cpu.")] = None,
    handler: Annotated[str | None, typer.Option(help="module:Class for custom models.")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Also serve the v2 protocol over gRPC on this port (the proxy's)."),
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes per version: batches run this many at once."),
    ] = None,
    policy: Annotated[
        ProxyPolicy | None,
        typer.Option(help="The proxy's batching policy: adaptive (default), eager or fixed."),
    ] = None,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for ready.")] = 600.0,
) -> None:
    """Serve a stored model: the model server plus the batching proxy in front of it.

    The model server follows the ref (latest and the stages move): a version stored or
    promoted while it runs is canaried and rolled out without a restart.
    """
    registry = Registry()
    try:  # fail fast on a bad or ambiguous ref, with the registry's message
        entry: ModelEntry | None = registry.resolve(model_ref, model_name)
    except NotFoundError:
        entry = None  # nothing stored yet: the servers start and wait for it
    if entry is not None and entry.requires:
        _check_hardware(entry, device)
    options = ServeOptions(
        repo=registry.root,
        model_name=entry.model_name if entry else model_name,
        model_ref=model_ref,
        host=host,
        port=port,
        model_port=model_port,
        device=device,
        handler=handler,
        instances=instances,
        grpc_port=grpc_port,
        policy=None if policy is None else policy.value,
        startup_timeout_s=startup_timeout,
    )
    supervisor = Supervisor(options, ui.child_log)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    ui.info(f"Starting [bold]{entry.label if entry else model_name or 'the model server'}[/] ...")
    try:
        info = supervisor.start(on_waiting=_say_waiting)
        _announce(supervisor, info, host, port)
        supervisor.wait()
        ui.info("Stopping ...")
    except KeyboardInterrupt:
        ui.info("Interrupted; stopping ...")
        raise
    finally:
        supervisor.stop()
        signal.signal(signal.SIGTERM, previous)


def _check_hardware(entry: ModelEntry, device: str | None) -> None:
    """What the model server would refuse, said before anything starts."""
    import torch

    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    reason = unmet(Requirements.from_json(entry.requires), Machine.probe(chosen), entry.label)
    if reason is not None:
        raise HardwareError(
            f"{reason}.",
            hint="serve it on a machine that has it, or store a version without --requires",
        )


def _say_waiting(reason: str) -> None:
    ui.info(f"Waiting for a version: {reason}. It is served as soon as one is stored.")


def _announce(supervisor: Supervisor, info: dict[str, object], host: str, port: int) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown_host}:{port}/predict"
    item = info.get("example_input") or {"input": "<your input>"}
    ui.info(
        f"Serving [bold]{info.get('model_name')}@{str(info.get('commit_hash'))[:7]}[/] on "
        f"{info.get('device')}: proxy pid {supervisor.proxy.pid} on {host}:{port}, "
        f"model server pid {supervisor.model.pid} on 127.0.0.1:{supervisor.options.model_port}"
    )
    ui.info("Send requests with:")
    body = json.dumps(item, separators=(",", ":"))
    ui.info(f"  curl -s {url} -H 'content-type: application/json' -d '{body}'")
    ui.info("Press Ctrl-C to stop.")
