"""The serving stack as real processes for fault tests: a model server, a proxy, or both."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness.faults import HANDLER, store_version
from tests.harness.servers import console_script, free_port, run_process

ROOT = Path(__file__).resolve().parents[2]
NEXUS = console_script("nexus")


def nexus(
    repo: Path, *args: str, code: int | None = 0, **popen: object
) -> subprocess.CompletedProcess[str]:
    """`nexus ARGS` as a process in `repo`; its exit status must be `code` (None: any), and
    whatever it says, never a traceback."""
    done = subprocess.run(
        [NEXUS, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
        **popen,  # type: ignore[call-overload]
    )
    if code is not None:
        assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done


def listed(repo: Path) -> list[dict[str, Any]]:
    versions: list[dict[str, Any]] = json.loads(nexus(repo, "list", "--json").stdout)
    return versions


def process_env(**extra: str) -> dict[str, str]:
    """This environment, with the repository importable (the fault-injecting handler)."""
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


@contextlib.contextmanager
def model_server(repo: Path, cache: Path, *flags: str, **spec: Any) -> Iterator[str]:
    """`nexus-model-server` serving a fault-injecting version (`spec`) of model svc."""
    store_version(repo, **{"name": "v1", **spec})
    port = free_port()
    cmd = [
        console_script("nexus-model-server"),
        "--port",
        str(port),
        "--repo",
        str(repo),
        "--model-name",
        "svc",
        "--handler",
        HANDLER,
        "--cache-dir",
        str(cache),
        *flags,
    ]
    base = f"http://127.0.0.1:{port}"
    with run_process(cmd, base + "/ready", env=process_env()):
        yield base


@contextlib.contextmanager
def simulated_model(
    *flags: str, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """tests/harness/sim_model.py as a process (20 ms a batch unless `flags` say otherwise):
    (its URL, the process)."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tests.harness.sim_model", "--port", str(port), *flags]
    with run_process(cmd, base + "/health", cwd=ROOT, env=process_env()) as proc:
        yield base, proc


@contextlib.contextmanager
def proxy(*upstreams: str, flags: tuple[str, ...] = ()) -> Iterator[str]:
    """`nexus-proxy` in front of `upstreams`."""
    port = free_port()
    cmd = [console_script("nexus-proxy"), "--port", str(port), "--health-interval-s", "0.2"]
    for upstream in upstreams:
        cmd += ["--upstream", upstream]
    base = f"http://127.0.0.1:{port}"
    with run_process([*cmd, *flags], base + "/ready", env=process_env()):
        yield base
