"""`nexus-model-server`: serve one model version with uvicorn."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp

from model_server.app import create_app
from model_server.settings import ServerSettings
from nexus_common.errors import NexusError
from nexus_common.memory import freeze_startup_heap
from nexus_common.runner import run_until_signalled
from nexus_common.settings import describe
from nexus_common.slow_clients import guarded_protocol


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = CliApp.run(ServerSettings, cli_args=list(argv) if argv is not None else None)
    except ValidationError as exc:
        print(f"Error: {describe(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(message)s")
    fatal: list[NexusError] = []
    server: uvicorn.Server | None = None

    def stop(error: NexusError) -> None:
        fatal.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=stop)
    # Everything imported so far (torch, FastAPI) lives as long as the process: out of the
    # collector's sight, a full collection (at a swap, or Python's own) takes microseconds,
    # not the ~130 ms that would stall every batch behind it.
    freeze_startup_heap()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http=guarded_protocol(settings.read_timeout_s),  # httptools, with a read deadline
            log_level=settings.log_level,
            access_log=False,
        )
    )
    run_until_signalled(server)
    if fatal:
        error = fatal[0]
        print(f"Error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"Hint: {error.hint}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
