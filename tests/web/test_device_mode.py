"""Device mode: a model server with no Git clone follows `production` through the
registry's update stream (Server-Sent Events, or gRPC), across a registry restart."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control_plane import Registry
from control_plane.web.roles import Role
from control_plane.web.tokens import add_token
from tests.conftest import commit_all, git
from tests.harness.faults import HANDLER, store_version
from tests.harness.servers import console_script, free_port, run_process

PICK_UP_S = 2.0  # the bound: a promotion reaches the device within 2 s


def serving(url: str) -> str | None:
    with contextlib.suppress(httpx.HTTPError):
        reply = httpx.post(url + "/predict", json={"x": 1}, timeout=5)
        if reply.status_code == 200:
            return str(reply.json()["output"]["version"])
    return None


def until(url: str, name: str, timeout_s: float) -> float:
    """Seconds until the server answers from version `name` (AssertionError past the bound)."""
    began = time.monotonic()
    while serving(url) != name:
        assert time.monotonic() - began < timeout_s, f"{name} not served within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - began


@contextlib.contextmanager
def registry_process(
    repo: Path, tokens: Path, port: int, grpc_port: int | None = None
) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    command = [console_script("nexus-registry"), "--workspace", str(repo), "--tokens", str(tokens)]
    command += ["--port", str(port)]
    if grpc_port is not None:
        command += ["--grpc-port", str(grpc_port)]
    with run_process(command, url + "/login"):
        yield url


@pytest.mark.parametrize("transport", ["sse", "grpc"])
def test_a_device_follows_production_through_the_update_stream(
    empty_repo: Path, tmp_path: Path, transport: str
) -> None:
    store = tmp_path / "store"
    (empty_repo / ".nexusrc").write_text(f"provider: local\npath: {store}\n")
    git(empty_repo, "config", "user.name", "Team")
    git(empty_repo, "config", "user.email", "team@example.com")
    commit_all(empty_repo, "config")
    versions = {n: store_version(empty_repo, name=f"v{n}") for n in (1, 2, 3)}
    Registry(empty_repo).promote(versions[1].short_hash, "svc", "production")
    commit_all(empty_repo, "three versions, v1 in production")
    tokens = tmp_path / "tokens.json"
    reader = add_token(tokens, "device", Role.READER, "device@example.com")
    approver = add_token(tokens, "ada", Role.APPROVER, "ada@example.com")
    registry_port, device_port = free_port(), free_port()
    grpc_port = free_port() if transport == "grpc" else None
    device_url = f"http://127.0.0.1:{device_port}"
    followed = f"grpc://127.0.0.1:{grpc_port}" if grpc_port else f"http://127.0.0.1:{registry_port}"
    device_env = dict(
        os.environ,
        NEXUS_REGISTRY_URL=followed,
        NEXUS_REGISTRY_TOKEN=reader,
        NEXUS_MODEL_NAME="svc",
        NEXUS_MODEL_REF="production",
        NEXUS_PROVIDER="local",
        NEXUS_PATH=str(store),
        NEXUS_HANDLER=HANDLER,
        NEXUS_CANARY_PERCENT="0",
        NEXUS_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(Path(__file__).parents[2]),
    )
    device_dir = tmp_path / "device"  # no Git here: only what the stream sends
    device = [console_script("nexus-model-server"), "--port", str(device_port)]
    device += ["--repo", str(device_dir)]
    with contextlib.ExitStack() as first_registry, contextlib.ExitStack() as running:
        registry_url = first_registry.enter_context(
            registry_process(empty_repo, tokens, registry_port, grpc_port)
        )
        running.enter_context(run_process(device, device_url + "/ready", env=device_env))
        assert serving(device_url) == "v1"
        assert not (device_dir / ".git").exists()
        reply = httpx.post(
            f"{registry_url}/api/v1/models/svc/versions/v2/promote",
            json={"stage": "production"},
            headers={"Authorization": f"Bearer {approver}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        until(device_url, "v2", PICK_UP_S)

        first_registry.close()  # the stream dies with the registry; the device serves on
        Registry(empty_repo).promote(versions[3].short_hash, "svc", "production")
        commit_all(empty_repo, "v3 to production while the device's stream was down")
        time.sleep(0.5)
        assert serving(device_url) == "v2"
        running.enter_context(registry_process(empty_repo, tokens, registry_port, grpc_port))
        until(device_url, "v3", 10.0)  # reconnected (Last-Event-ID) and on the latest


def test_the_registry_stops_on_sigterm_while_a_device_is_streaming(
    empty_repo: Path, tmp_path: Path
) -> None:
    """A connected device's stream never ends by itself: SIGTERM must end it, not wait on it
    (it used to hold `nexus-registry` until it was killed)."""
    version = store_version(empty_repo, name="v1")
    Registry(empty_repo).promote(version.short_hash, "svc", "production")
    commit_all(empty_repo, "v1 in production")
    tokens = tmp_path / "tokens.json"
    reader = add_token(tokens, "device", Role.READER, "device@example.com")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [console_script("nexus-registry"), "--workspace", str(empty_repo)]
    command += ["--tokens", str(tokens), "--port", str(port)]
    with (
        run_process(command, url + "/login") as registry,
        httpx.stream(
            "GET",
            f"{url}/api/v1/models/svc/refs/production/watch",
            headers={"Authorization": f"Bearer {reader}"},
            timeout=30,
        ) as stream,
    ):
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: version"
        registry.send_signal(signal.SIGTERM)
        assert registry.wait(timeout=10) == 0  # a clean exit, the stream ended by the server
        assert not any(line.startswith("event:") for line in lines)
