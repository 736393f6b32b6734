"""`nexus-proxy`: run the batching proxy under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvicorn

from batch_proxy.app import ProxyApp
from batch_proxy.errors import SettingsError
from batch_proxy.fast_predict import fast_protocol
from batch_proxy.settings import ProxySettings, settings_from
from nexus_common.memory import freeze_startup_heap
from nexus_common.runner import raise_open_files_limit, run_until_signalled


def build_server(settings: ProxySettings) -> uvicorn.Server:
    app = ProxyApp(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, with a read deadline; predictions answered in the protocol itself
        http=fast_protocol(app, settings.read_timeout_s),
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,  # one log line per item would cost more than the batching saves
        backlog=max(2048, settings.max_queue),
        limit_concurrency=None,  # the queue bound (503) is the one limit
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
        # Per request these cost more than they give a proxy that answers its own JSON.
        proxy_headers=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = settings_from(argv)
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    raise_open_files_limit()
    server = build_server(settings)
    freeze_startup_heap()
    run_until_signalled(server)


if __name__ == "__main__":
    main()
