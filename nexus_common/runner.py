"""Running a uvicorn server as a command: clean exit statuses after a graceful shutdown.

Shared by `nexus-proxy`, `nexus-model-server` and `nexus-registry`.
"""

from __future__ import annotations

import logging
import resource
import signal
import sys

import uvicorn

logger = logging.getLogger("nexus.http")

CONNECTIONS_WANTED = 10_000  # client connections a server should hold at once
_SPARE_FILES = 512  # upstream connections, the listening socket, logs, libraries


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


def raise_open_files_limit(wanted: int = CONNECTIONS_WANTED + _SPARE_FILES) -> int:
    """Raise this process's open-files soft limit to its hard limit (each connection is a
    file; the usual soft limit of 1,024 would refuse the 1,000th client). Warns when the
    hard limit is below `wanted`. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        logger.warning(
            "the open-files hard limit is %d: about %d client connections at most; raise it "
            "(ulimit -Hn, LimitNOFILE, or the container runtime's nofile) for %d",
            hard,
            max(0, hard - _SPARE_FILES),
            wanted - _SPARE_FILES,
        )
    target = max(soft, wanted) if hard == resource.RLIM_INFINITY else hard
    if soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning("could not raise the open-files limit from %d: %s", soft, exc)
        return soft
    logger.info("open-files limit raised from %d to %d", soft, target)
    return target
