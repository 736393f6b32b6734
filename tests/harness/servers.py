"""Run ASGI apps on real sockets for tests: in-process (uvicorn) or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from batch_proxy.app import ProxyApp
from batch_proxy.fast_predict import fast_protocol


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_in_process(
    app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[str]:
    """Serve `app` on `host` (a loopback address) and `port` (0: a free one) in this event
    loop; yield its base URL."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, **options
    )
    server = _QuietServer(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.cancel()
        raise RuntimeError("the test server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def serve_proxy(app: ProxyApp) -> contextlib.AbstractAsyncContextManager[str]:
    """The proxy served in this event loop as `nexus-proxy` serves it: predictions answered
    in the HTTP protocol (batch_proxy.fast_predict), the rest by the ASGI app."""
    http = fast_protocol(app, app.settings.read_timeout_s)
    return serve_in_process(app, lifespan="on", http=http)


@contextlib.contextmanager
def run_process(
    args: Sequence[str],
    ready_url: str,
    *,
    cwd: Path | None = None,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until `ready_url` answers 200, stop it afterwards.

    Its output goes to a file (`log_path`, for a test that reads the log; else a temporary
    one), read back when it fails to start: a pipe nobody reads would stop the server once
    its log filled the pipe's 64 KiB.
    """
    opened = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    with opened as log:
        proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=env or dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            **popen,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    raise RuntimeError(f"{args[0]} exited with {proc.returncode}:\n{output}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} was not ready within {timeout_s} s")
                time.sleep(0.1)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def free_port() -> int:
    """A port free on 127.0.0.1 now (the benches' and the tests' servers bind one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_and_proxy(
    repo: Path,
    cache: Path,
    proxy_flags: Sequence[str] = (),
    server_flags: Sequence[str] = (),
) -> Iterator[tuple[str, str]]:
    """`nexus-model-server` (token-guarded) serving `repo` and `nexus-proxy` in front of it,
    as processes: (the proxy's host:port, the server's URL). The server imports handlers
    from this checkout (`tests.harness...`)."""
    server_port, proxy_port = free_port(), free_port()
    server = f"http://127.0.0.1:{server_port}"
    env = dict(os.environ, NEXUS_CACHE_DIR=str(cache), NEXUS_SERVER_TOKEN="t0k")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    serve = [console_script("nexus-model-server"), "--port", str(server_port), "--repo", str(repo)]
    serve += server_flags
    proxy = [
        console_script("nexus-proxy"),
        *("--port", str(proxy_port), "--upstream", server, "--upstream-token", "t0k"),
        *proxy_flags,
    ]
    with (
        run_process(serve, server + "/ready", env=env),
        run_process(proxy, f"http://127.0.0.1:{proxy_port}/ready"),
    ):
        yield f"127.0.0.1:{proxy_port}", server
