"""Run the model server and the batching proxy as two child processes, wired together.

The supervisor starts both, waits until each is up (the model server may be
up and waiting for a version to be stored: it says why, and the supervisor
waits with it), relays their logs with a prefix, and stops both when asked
(SIGTERM/Ctrl-C) or when either dies, reporting why. Each child runs in a
session of its own, so a terminal's Ctrl-C reaches only the supervisor, which
stops the proxy first (it drains its queue into a live model server) and the
model server second. If the supervisor itself dies (kill -9), the kernel stops
both children (SIGTERM, PR_SET_PDEATHSIG): none is left holding its port.

Children get their settings as NEXUS_* variables, never as hand-built argv; `nexus serve`
imports neither server (it is the composition root above both), and each child validates
its own settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_plane.core.errors import ServeError

LogSink = Callable[[str, str], None]
"""Called with (child name, one log line)."""


@dataclass
class ServeOptions:
    repo: Path
    model_name: str | None = None
    model_ref: str = "latest"
    host: str = "127.0.0.1"
    port: int = 8080
    model_port: int = 8000
    device: str | None = None
    handler: str | None = None
    instances: int | None = None  # the model server's worker processes per version
    grpc_port: int | None = None  # the proxy's gRPC port (the v2 protocol), if any
    policy: str | None = None  # the proxy's batching policy; None: its own default
    startup_timeout_s: float = 600.0


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str | None]
    ready_url: str
    process: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None


def child_settings(options: ServeOptions) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The model server's and the proxy's NEXUS_* variables for what `nexus serve` decides.

    Built here, not from the servers' settings models: `nexus serve` starts the two servers
    and imports neither. Every other NEXUS_* variable already set reaches the children as it
    is; each validates its own settings at start, and a child that refuses them exits with
    its one sentence, which `nexus serve` reports.
    """
    token = secrets.token_urlsafe(24)  # only the proxy may call the model server
    server: dict[str, str | None] = {
        "NEXUS_SERVER_TOKEN": token,
        "NEXUS_HOST": "127.0.0.1",
        "NEXUS_PORT": str(options.model_port),
        "NEXUS_REPO": str(options.repo),
        "NEXUS_MODEL_REF": options.model_ref,
    }
    for name, value in (
        ("NEXUS_MODEL_NAME", options.model_name),
        ("NEXUS_DEVICE", options.device),
        ("NEXUS_HANDLER", options.handler),
        ("NEXUS_INSTANCES", None if options.instances is None else str(options.instances)),
    ):
        if value is not None:
            server[name] = value
    proxy: dict[str, str | None] = {
        "NEXUS_PROXY_HOST": options.host,
        "NEXUS_PROXY_PORT": str(options.port),
        "NEXUS_PROXY_UPSTREAMS": f"http://127.0.0.1:{options.model_port}",
        "NEXUS_PROXY_UPSTREAM_DNS": None,  # the one upstream is the model server started here
        "NEXUS_PROXY_UPSTREAM_TOKEN": token,
    }
    if options.policy is not None:
        proxy["NEXUS_PROXY_POLICY"] = options.policy
    if options.grpc_port is not None:
        proxy["NEXUS_PROXY_GRPC_PORT"] = str(options.grpc_port)
    return server, proxy


class Supervisor:
    def __init__(self, options: ServeOptions, log: LogSink) -> None:
        self.options = options
        self._log = log
        self._stop = threading.Event()
        server_env, proxy_env = child_settings(options)
        model_url = f"http://127.0.0.1:{options.model_port}"
        python = [sys.executable, "-m"]
        self.model = Child("model", [*python, "model_server"], server_env, model_url + "/health")
        self.proxy = Child(
            "proxy", [*python, "batch_proxy"], proxy_env, f"http://127.0.0.1:{options.port}/ready"
        )

    @property
    def children(self) -> tuple[Child, Child]:
        return self.model, self.proxy

    def request_stop(self) -> None:
        self._stop.set()

    def start(self, on_waiting: Callable[[str], None]) -> dict[str, Any]:
        """Start both; return the model server's /model once it serves a version.

        While the model server waits (nothing stored yet, not approved), `on_waiting` gets
        each new reason; that wait has no deadline, as the server's own has none.
        """
        self._spawn(self.model)
        self._wait_ready(self.model)
        self._spawn(self.proxy)
        self._wait_ready(self.proxy)
        model_url = f"http://127.0.0.1:{self.options.model_port}"
        said = None
        while True:
            status, body = _get(model_url + "/ready")
            if status == 200:
                return _get_json(model_url + "/model")
            reason = str(body.get("error", "")) if isinstance(body, dict) else ""
            if reason and reason != said and not reason.startswith(LOADING):
                on_waiting(reason)
                said = reason
            if self._stop.wait(0.2):
                raise ServeError("stopped before a version was served.")
            self._check_alive()

    def wait(self) -> None:
        """Block until a stop is requested or a child dies (then raise ServeError)."""
        while not self._stop.wait(0.2):
            self._check_alive()

    def _check_alive(self) -> None:
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                raise ServeError(self._death_message(child, code))

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM both (the proxy first, so it drains into a live model), then wait."""
        for child in (self.proxy, self.model):
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()

    def _spawn(self, child: Child) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name, value in child.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        child.process = subprocess.Popen(
            child.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's Ctrl-C is the supervisor's to handle
            preexec_fn=_die_with(os.getpid()),  # called on the main thread, which outlives it
        )
        threading.Thread(target=self._relay, args=(child,), daemon=True).start()

    def _relay(self, child: Child) -> None:
        assert child.process is not None
        assert child.process.stdout is not None
        for raw in child.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            child.tail.append(line)
            self._log(child.name, line)

    def _wait_ready(self, child: Child) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.options.startup_timeout_s
        while time.monotonic() < deadline:
            if self._stop.is_set():
                raise ServeError("stopped before the servers were ready.")
            self._check_alive()
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(child.ready_url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise ServeError(
            f"the {child.name} server was not ready within {self.options.startup_timeout_s:.0f} s."
        )

    def _death_message(self, child: Child, code: int) -> str:
        time.sleep(0.2)  # let the relay thread catch the last lines
        errors = [line for line in child.tail if line.startswith("Error:")]
        reason = (
            errors[-1].removeprefix("Error:").strip()
            if errors
            else (child.tail[-1] if child.tail else "no output")
        )
        return f"the {child.name} server exited with code {code}: {reason}"


LOADING = "the model is still loading"


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> Callable[[], None]:
    """Run in the child before it execs: the kernel sends it SIGTERM when the supervisor
    dies, even by kill -9, so no server outlives `nexus serve` holding its port (a child
    in a session of its own gets no terminal hang-up). Linux only; elsewhere a no-op."""

    def arrange() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the line above
            os._exit(1)

    return arrange


def _get_json(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.loads(response.read())
    return data if isinstance(data, dict) else {}


def _get(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET, error statuses included; (0, None) when unreachable."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None
