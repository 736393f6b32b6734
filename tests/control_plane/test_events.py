"""An event for every registry change: through the CLI, the Python API and the web
registry, to the events file and a webhook on loopback (signed; an outbox when it is down)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from control_plane import Registry
from control_plane.registry.events import DELIVERY_BUDGET_S, cloud_event
from control_plane.web.roles import Role
from control_plane.web.settings import RegistrySettings
from control_plane.web.tokens import add_token
from tests.conftest import commit_all, git
from tests.control_plane.test_cli import nexus
from tests.harness.servers import free_port
from tests.web.conftest import asgi_client

SECRET = "s3cret-shared-with-the-receiver"


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_history(repo: Path) -> list[tuple[str, str, dict[str, Any]]]:
    document = json.loads((repo / ".nexus_meta.json").read_text())
    return [
        (entry["model_name"], entry["commit_hash"], event)
        for entry in [*document["models"], *document.get("deleted", [])]
        for event in entry.get("history", [])
    ]


def store(repo: Path, tmp_path: Path, name: str, n: int) -> None:
    git(repo, "commit", "-q", "--allow-empty", "-m", f"train {n}")
    (tmp_path / f"{n}.bin").write_bytes(f"weights {n}".encode())
    nexus("store", str(tmp_path / f"{n}.bin"), name, "--metric", f"acc={n / 10}")


async def test_every_change_is_one_event_matching_the_history(repo: Path, tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    (repo / ".nexusrc").write_text(f"events_file: {events_file}\n")
    for n in (1, 2, 3):
        store(repo, tmp_path, "resnet", n)
    commit_all(repo, "three versions")
    # the CLI
    nexus("promote", "v1", "resnet", "--stage", "production")
    nexus("approve", "v2", "resnet")
    nexus("reject", "v3", "resnet", "--reason", "drifts")
    nexus("archive", "v3", "resnet")
    nexus("rollback", "v1", "resnet")
    nexus("alias", "set", "resnet@v2", "champion")
    nexus("alias", "rm", "resnet@champion")
    nexus("promote", "v1", "resnet", "--stage", "production")  # no change: no event
    # the Python API
    registry = Registry(repo)
    registry.promote("v2", "resnet", "production")  # and v1 loses it: still one event
    registry.delete("resnet@v3")
    # the web registry
    tokens = tmp_path / "tokens.json"
    token = add_token(tokens, "ada", Role.ADMIN, "ada@example.com")
    async with asgi_client(RegistrySettings(workspace=repo, tokens=tokens)) as client:
        reply = await client.post(
            "/api/v1/models/resnet/versions/v1/promote",
            json={"stage": "staging"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 200
    # gc: a version stored and deleted before any commit named it: its bytes are collected
    store(repo, tmp_path, "resnet", 4)
    registry.delete("resnet@v4")
    hour_ago = time.time() - 3600  # gc never takes what was written in its last seconds
    for stored in (repo / ".nexus" / "store").rglob("*"):
        os.utime(stored, (hour_ago, hour_ago))
    nexus("gc", "--grace", "0", "--yes")

    events = events_of(events_file)
    kinds = [e["type"].removeprefix("dev.nexusml.") for e in events]
    assert kinds == [
        *["version.stored"] * 3,
        "version.promoted", "version.approved", "version.rejected", "version.archived",
        "version.rolled_back", "version.alias_set", "version.alias_removed",
        "version.promoted", "version.deleted",
        "version.promoted",
        "version.stored", "version.deleted", "store.collected",
    ]  # fmt: skip
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["source"]
        assert event["time"]
    # each history entry belongs to exactly one event, and each event names its own
    history = all_history(repo)
    covered = [
        c["seq"]
        for e in events
        if e["type"].startswith("dev.nexusml.version.")
        for c in e["data"]["changes"]
    ]
    assert sorted(covered) == sorted(h["seq"] for _, _, h in history)
    promoted = events[10]["data"]
    assert (promoted["version"], promoted["before"], promoted["after"]) == (2, None, "production")
    assert {(c["version"], c["to"]) for c in promoted["changes"]} == {(2, "production"), (1, None)}
    assert events[5]["data"]["reason"] == "drifts"
    assert events[12]["data"]["who"] == "ada <ada@example.com>"  # the web's token owner
    assert events[15]["data"]["deleted"]  # gc names the objects it deleted
    # the id is stable: the same change, read again from the metadata, has the same id
    main = max(events[3]["data"]["changes"], key=lambda c: c["seq"])
    subject = f"resnet@{main['commit']}"
    again = cloud_event("version.promoted", "x", subject, "t", {}, f"{subject}#{main['seq']}")
    assert again["id"] == events[3]["id"]


class Receiver:
    """A webhook receiver on loopback, started and stopped by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Receiver]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay_s)
                outer.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def webhook_repo(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Receiver]:
    receiver = Receiver(free_port())
    (repo / ".nexusrc").write_text(f"webhook_url: http://127.0.0.1:{receiver.port}/hook\n")
    monkeypatch.setenv("NEXUS_WEBHOOK_SECRET", SECRET)
    for n in (1, 2):
        git(repo, "commit", "-q", "--allow-empty", "-m", f"train {n}")
        (tmp_path / f"{n}.bin").write_bytes(f"weights {n}".encode())
        Registry(repo).store(tmp_path / f"{n}.bin", "resnet")  # the receiver is down: outbox
    return repo, receiver


def test_webhook_bodies_are_signed_with_the_shared_secret(
    webhook_repo: tuple[Path, Receiver],
) -> None:
    repo, receiver = webhook_repo
    with receiver.running():
        Registry(repo).events.flush()  # the two that waited while it was down (backoff: 5 s)
        Registry(repo).promote("v1", "resnet", "production")
    assert len(receiver.received) == 3
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Nexus-Signature-256"], expected)
        assert headers["Content-Type"].startswith("application/cloudevents+json")
    types = [json.loads(body)["type"] for _, body in receiver.received]
    assert types == ["dev.nexusml.version.stored"] * 2 + ["dev.nexusml.version.promoted"]
    assert Registry(repo).events.waiting() == []


def test_with_the_receiver_down_commands_go_on_and_the_outbox_delivers_once_back(
    webhook_repo: tuple[Path, Receiver],
) -> None:
    repo, receiver = webhook_repo
    assert len(Registry(repo).events.waiting()) == 2  # the receiver was down for both stores
    began = time.monotonic()
    nexus("approve", "v1", "resnet")  # still down: the command succeeds at once
    assert time.monotonic() - began < DELIVERY_BUDGET_S
    listed = json.loads(nexus("events", "list", "--json").stdout)
    assert [w["event"]["type"] for w in listed["outbox"]] == [
        "dev.nexusml.version.stored", "dev.nexusml.version.stored", "dev.nexusml.version.approved"
    ]  # fmt: skip
    with receiver.running():
        assert "Delivered 3; 0 still waiting." in nexus("events", "flush").stdout
        nexus("events", "flush")  # nothing left: nothing sent twice
    ids = [json.loads(body)["id"] for _, body in receiver.received]
    assert len(ids) == 3
    assert len(set(ids)) == 3  # each exactly once
    assert Registry(repo).events.waiting() == []


def test_a_slow_webhook_holds_a_command_no_more_than_the_budget(
    webhook_repo: tuple[Path, Receiver],
) -> None:
    repo, receiver = webhook_repo
    receiver.delay_s = 5.0
    with receiver.running():
        began = time.monotonic()
        Registry(repo).promote("v2", "resnet", "staging")
        held = time.monotonic() - began
    assert held < DELIVERY_BUDGET_S + 0.5
    assert Registry(repo).events.waiting()  # what did not make it waits for the next command
