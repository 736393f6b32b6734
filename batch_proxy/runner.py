"""Running a uvicorn server as a command: clean exit statuses after a graceful shutdown.

Shared by `nexus-proxy` and `nexus-model-server` (which may import this module
and `wire`, nothing else of the proxy).
"""

from __future__ import annotations

import signal
import sys

import uvicorn


def run_until_signalled(server: uvicorn.Server) -> None:
    """Serve until SIGTERM (exit 0) or Ctrl-C (exit 130); exit 1 if it never started.

    uvicorn re-raises the stop signal once its graceful shutdown is done; these
    handlers turn that into an exit status instead of a death by signal.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    server.run()
    if not server.started:
        raise SystemExit(1)
