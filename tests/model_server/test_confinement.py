"""Hostile models, each served by the model server as a real process, confined by default.

One server follows one model. Version 1 behaves; then each hostile version is stored in
turn and the follower puts it on canary. For each, the attempt fails or its worker is
stopped, the log names what was refused, callers get a clear error in bounded time,
`/health` keeps answering, and the canary (or the workers' deaths) rolls it back: version
1 serves throughout.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane import Registry
from model_server.predictor import ItemFailure
from model_server.service import load_entry
from model_server.settings import ServerSettings
from model_server.workers import landlock, seccomp
from tests.harness.servers import console_script, free_port, run_process
from tests.model_server.handlers import store_plan

pytestmark = [
    pytest.mark.long,
    pytest.mark.skipif(
        sys.platform != "linux" or not seccomp.supported() or landlock.abi_version() < 1,
        reason="confinement needs Linux with seccomp and Landlock",
    ),
]

TOKEN = "t0k"
HANDLERS = "tests.model_server.handlers"
BATCH_TIMEOUT_S = 3
CALL_BOUND_S = 15  # a caller's answer, whatever the model does


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection it is offered."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, address = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(address)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def batch(client: httpx.Client, base: str, marker: str) -> httpx.Response:
    return client.post(
        base + "/predict/batch",
        json={"inputs": [{"n": marker, "i": i} for i in range(4)]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=CALL_BOUND_S,
    )


def roll_back(client: httpx.Client, base: str, commit: str, since: int) -> dict[str, Any]:
    """Traffic until the follower rolls `commit` back: (the candidate's answers, the event)."""
    answers: list[httpx.Response] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        started = time.monotonic()
        reply = batch(client, base, commit)
        assert time.monotonic() - started < CALL_BOUND_S
        answers.append(reply)
        assert client.get(base + "/health").status_code == 200
        events = client.get(base + "/deployment", params={"since": since}).json()["events"]
        for event in events:
            version = event.get("version") or {}
            if event["event"] == "rolled_back" and version.get("commit_hash") == commit:
                return {"event": event, "answers": answers}
    raise AssertionError(f"{commit[:7]} was not rolled back: {[a.text for a in answers][-3:]}")


def last_seq(client: httpx.Client, base: str) -> int:
    events = client.get(base + "/deployment").json()["events"]
    return max((event["seq"] for event in events), default=0)


def test_hostile_models_are_refused_and_rolled_back(
    repo: Path, tmp_path: Path, listener: Listener
) -> None:
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    credentials = home / ".aws" / "credentials"
    credentials.write_text("[default]\naws_secret_access_key = SECRET-IN-HOME\n")
    signing_key = repo / "keys" / "signing.pem"
    signing_key.parent.mkdir()
    signing_key.write_text("-----BEGIN PRIVATE KEY-----\nSECRET-KEY\n")
    outside = tmp_path / "outside.txt"
    marker = tmp_path / "shell-ran"
    log = tmp_path / "server.log"

    good = store_plan(repo, {"do": "echo"}, "hostile")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[2]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(root),
        "AWS_SECRET_ACCESS_KEY": "SECRET-IN-ENV",
        "NEXUS_SERVER_TOKEN": TOKEN,
        "NEXUS_CACHE_DIR": str(tmp_path / "cache"),
    }
    args = [
        *(console_script("nexus-model-server"), "--port", str(port), "--repo", str(repo)),
        *("--model-name", "hostile", "--handler", "tests.model_server.handlers:Hostile"),
        *("--poll-interval-s", "0.2", "--canary-percent", "50", "--canary-min-items", "8"),
        *("--canary-min-s", "0", "--batch-timeout-s", str(BATCH_TIMEOUT_S)),
        *("--worker-memory", "6GiB"),
    ]
    hostile: list[tuple[dict[str, Any], str]] = [
        ({"do": "connect", "port": listener.port}, "tried to open a network socket"),
        ({"do": "read", "paths": [str(credentials)]}, f"tried to read {credentials}"),
        ({"do": "read", "paths": [str(signing_key)]}, f"tried to read {signing_key}"),
        ({"do": "write", "path": str(outside)}, f"tried to write {outside}"),
        ({"do": "shell", "marker": str(marker)}, "tried to run"),
        ({"do": "fork"}, "tried to fork a process"),
        ({"do": "allocate", "bytes": 64 * 2**30}, "more memory than its limit (6.0 GiB)"),
        ({"do": "segfault"}, "was killed by SIGSEGV"),
        ({"do": "hang"}, f"did not answer within {BATCH_TIMEOUT_S} s and was stopped"),
    ]
    with (
        run_process(args, base + "/ready", env=env, log_path=log),
        httpx.Client() as client,
    ):
        first = batch(client, base, "warm")
        assert first.status_code == 200, first.text
        assert first.json()["model"]["commit_hash"] == good
        runtime = client.get(base + "/model").json()["runtime"]
        assert runtime["process"] == "workers"
        assert any("seccomp" in layer for layer in runtime["confinement"])
        assert any("landlock" in layer for layer in runtime["confinement"])
        for plan, said in hostile:
            since = last_seq(client, base)
            commit = store_plan(repo, plan, "hostile")
            outcome = roll_back(client, base, commit, since)
            refused = [a for a in outcome["answers"] if _candidate_failed(a, commit)]
            assert refused, f"{plan['do']}: no caller saw the candidate fail"
            for answer in outcome["answers"]:
                assert "SECRET" not in answer.text
            assert said in log.read_text(), f"{plan['do']}: the log does not say {said!r}"
            assert batch(client, base, "after").json()["model"]["commit_hash"] == good
        assert listener.accepted == []
        assert not outside.exists()
        assert not marker.exists()
    assert "SECRET" not in log.read_text()


def _candidate_failed(answer: httpx.Response, commit: str) -> bool:
    """The batch went to the hostile version and failed: every item named (200 with
    errors), or the whole batch (500: its worker died or hung)."""
    if answer.status_code == 500:
        return commit[:7] in answer.json()["error"]
    body = answer.json()
    return body["model"]["commit_hash"] == commit and len(body.get("errors", {})) == 4


@pytest.mark.parametrize("confine", ["on", "off"])
def test_the_refusal_is_the_confinements_doing(
    repo: Path, tmp_path: Path, listener: Listener, confine: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same model, with and without confinement: only `--confine off` lets it connect
    (and says so in a warning), so the hostile tests above can fail."""
    store_plan(repo, {"do": "connect", "port": listener.port}, "hostile")
    entry = Registry(repo).resolve("latest", "hostile")
    settings = ServerSettings(
        repo=repo,
        cache_dir=tmp_path / "cache",
        handler=f"{HANDLERS}:Hostile",
        confine="off" if confine == "off" else "on",
    )
    predictor = load_entry(settings, entry)
    try:
        outputs = predictor.predict([{"n": 1}])
    finally:
        predictor.close()
    deadline = time.monotonic() + 5
    if confine == "off":
        assert "NOT confined" in caplog.text
        while not listener.accepted:
            assert time.monotonic() < deadline, "unconfined, the model should have connected"
            time.sleep(0.05)
        assert not isinstance(outputs[0], ItemFailure)
    else:
        assert isinstance(outputs[0], ItemFailure)
        assert "Operation not permitted" in outputs[0].message
        assert listener.accepted == []
