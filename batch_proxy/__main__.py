"""`nexus-proxy`: run the batching proxy under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import uvicorn

from batch_proxy.app import ProxyApp
from batch_proxy.settings import ProxySettings, SettingsError, settings_from


def build_server(settings: ProxySettings) -> uvicorn.Server:
    config = uvicorn.Config(
        ProxyApp(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,  # one log line per item would cost more than the batching saves
        backlog=max(2048, settings.max_queue),
        limit_concurrency=None,  # the queue bound (503) is the one limit
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
    )
    return uvicorn.Server(config)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = settings_from(argv)
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    server = build_server(settings)
    # uvicorn re-raises the stop signal once its graceful shutdown is done; turn that into
    # a plain exit status (0 for SIGTERM, 130 for Ctrl-C) instead of a death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    server.run()
    if not server.started:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
