"""`nexus-registry`: the registry's web application for a team (`nexus ui` for one person)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from control_plane.core.errors import NexusError
from control_plane.web.app import create_app
from control_plane.web.settings import RegistrySettings
from nexus_common.runner import run_until_signalled


def parse(argv: Sequence[str] | None) -> RegistrySettings:
    parser = argparse.ArgumentParser(
        prog="nexus-registry", description="The registry on the web: REST API and pages."
    )
    parser.add_argument("--workspace", help="a clone of the team's repository (default: .)")
    parser.add_argument(
        "--tokens",
        help="token file (nexus keys create NAME --role ROLE --file FILE); "
        "without it the registry is read-only",
    )
    parser.add_argument(
        "--push",
        action="store_true",
        default=None,
        help="push each change's commit (a rejected push is merged and retried)",
    )
    parser.add_argument("--remote", help="the remote to push to (default origin)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8090)")
    parser.add_argument(
        "--grpc-port", type=int, help="also serve the update stream over gRPC on this port"
    )
    flags = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return RegistrySettings(**flags)


def build_server(settings: RegistrySettings) -> uvicorn.Server:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    app.state.registry.stopping = lambda: server.should_exit  # update streams end on SIGTERM
    return server


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = parse(argv)
        server = build_server(settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"Error: {'.'.join(map(str, first['loc']))}: {first['msg']}.", file=sys.stderr)
        raise SystemExit(1) from None
    except NexusError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    print(f"NexusML registry on http://{settings.host}:{settings.port}/", file=sys.stderr)
    run_until_signalled(server)


if __name__ == "__main__":
    main()
