"""Continuous delivery in a real server: follow a ref, canary, promote, roll back, refuse.

Each test runs the model server on a free port in this event loop, stores
versions with the real registry in a real Git repo, and drives batches while
the server notices and rolls out. Versions are `FaultInjectingModel` specs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane import Registry
from model_server.app import create_app
from model_server.settings import ServerSettings
from tests.conftest import git
from tests.harness.faults import HANDLER, store_version
from tests.harness.servers import console_script, free_port, serve_in_process

FAST = {
    "handler": HANDLER,
    "model_name": "svc",
    "poll_interval_s": 0.1,
    "canary_percent": 50,
    "canary_min_items": 40,
    "canary_min_s": 0.3,
}


@contextlib.asynccontextmanager
async def running(repo: Path, tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(repo=repo, cache_dir=tmp_path / "cache", **{**FAST, **overrides})
    async with (
        serve_in_process(create_app(settings), lifespan="on") as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


class Load:
    """Batches of 4 items back to back, counting who answered and what failed."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.statuses: Counter[int] = Counter()
        self.batches: Counter[str] = Counter()  # version name -> batches answered
        self.failed_items: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            reply = await self.client.post("/predict/batch", json={"inputs": [{"x": 1}] * 4})
            self.statuses[reply.status_code] += 1
            if reply.status_code == 200:
                body = reply.json()
                names = {
                    o["version"] for o in body["outputs"] if isinstance(o, dict) and "echo" in o
                }
                assert len(names) <= 1, "a batch is answered by exactly one version"
                name = names.pop() if names else "?"
                self.batches[name] += 1
                self.failed_items[name] += len(body.get("errors", {}))
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> Load:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await client.get("/deployment")).json()["events"])


async def wait_for_event(
    client: httpx.AsyncClient, kind: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    for _ in range(int(timeout_s / 0.05)):
        found = [e for e in await events(client) if e["event"] == kind]
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout_s} s: {await events(client)}")


async def serving_name(client: httpx.AsyncClient) -> str:
    reply = await client.post("/predict", json={"x": 1})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["output"]["version"])


async def test_a_healthy_candidate_is_canaried_then_promoted(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "events.jsonl"
    monkeypatch.setenv("NEXUS_EVENTS_FILE", str(events_file))  # the server's sink
    store_version(repo, name="v1")
    async with running(repo, tmp_path) as client:
        await wait_for_event(client, "serving")
        async with Load(client) as load:
            v2 = store_version(repo, name="v2")
            promoted = await wait_for_event(client, "promoted")
        assert promoted["version"]["commit_hash"] == v2.commit_hash
        assert promoted["figures"]["candidate"]["items"] >= 40
        assert set(load.statuses) == {200}
        assert set(load.batches) == {"v1", "v2"}
        assert await serving_name(client) == "v2"
        kinds = [e["event"] for e in await events(client)]
        assert kinds == ["loading", "serving", "loading", "canary", "promoted"]
        model = (await client.get("/model")).json()
        assert model["commit_hash"] == v2.commit_hash
        assert model["rollout"]["last_rollout"]["event"] == "promoted"
        metrics = (await client.get("/metrics")).text
        assert "nexus_model_swaps_total 1.0" in metrics
        assert f'commit_hash="{v2.commit_hash}"' in metrics

        shown = await asyncio.to_thread(
            subprocess.run,
            [console_script("nexus"), "deployment", str(client.base_url)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout
        for kind in ("serving", "loading", "canary", "promoted"):
            assert kind in lines
        assert lines.index("canary") < lines.index("promoted")
    published = [json.loads(line) for line in events_file.read_text().splitlines()]
    rollout = [e for e in published if e["type"].startswith("dev.nexusml.rollout.")]
    assert [e["type"].rsplit(".", 1)[1] for e in rollout] == [
        "loaded", "canary_started", "promoted"
    ]  # fmt: skip
    assert rollout[-1]["data"]["commit"] == v2.commit_hash
    assert rollout[-1]["data"]["figures"]["candidate"]["items"] >= 40
    stored = [e for e in published if e["type"] == "dev.nexusml.version.stored"]
    assert len(stored) == 2  # the test's own stores, through the same sink


async def test_a_candidate_failing_a_fifth_of_items_is_rolled_back(
    repo: Path, tmp_path: Path
) -> None:
    store_version(repo, name="v1")
    async with running(repo, tmp_path) as client:
        await wait_for_event(client, "serving")
        async with Load(client) as load:
            store_version(repo, name="v2", fail_every=5)
            rolled_back = await wait_for_event(client, "rolled_back")
            seen = load.batches.copy()
            await asyncio.sleep(0.3)
        assert rolled_back["reason"].startswith("error rate")
        assert rolled_back["figures"]["candidate"]["error_rate"] == pytest.approx(0.2, abs=0.03)
        assert load.failed_items["v1"] == 0
        # The candidate answered its share of the window's batches and no more.
        canary = next(e for e in await events(client) if e["event"] == "canary")
        window = rolled_back["figures"]
        assert window["candidate"]["batches"] <= window["current"]["batches"] + 1
        assert seen["v2"] <= window["candidate"]["batches"]
        assert canary["percent"] == 50
        assert load.batches["v2"] == seen["v2"], "nothing reaches a rolled-back version"
        assert await serving_name(client) == "v1"
        assert "nexus_model_rollbacks_total 1.0" in (await client.get("/metrics")).text
        # Not retried while the ref stays there.
        await asyncio.sleep(0.5)
        assert [e["event"] for e in await events(client)].count("loading") == 2


async def test_a_candidate_200ms_slower_per_batch_is_rolled_back(
    repo: Path, tmp_path: Path
) -> None:
    store_version(repo, name="v1")
    async with running(repo, tmp_path, canary_min_items=20) as client:
        await wait_for_event(client, "serving")
        async with Load(client):
            store_version(repo, name="v2", delay_ms=200)
            rolled_back = await wait_for_event(client, "rolled_back")
        assert rolled_back["reason"].startswith("p99 batch time")
        assert rolled_back["figures"]["candidate"]["p99_ms"] >= 200
        assert await serving_name(client) == "v1"


async def test_versions_that_cannot_load_never_take_traffic(repo: Path, tmp_path: Path) -> None:
    store_version(repo, name="v1")
    async with running(repo, tmp_path) as client:
        await wait_for_event(client, "serving")
        async with Load(client) as load:
            store_version(repo, name="v2", fail_load="weights do not match the code")
            failed = await wait_for_event(client, "load_failed")
            assert "weights do not match the code" in failed["reason"]

            v3 = Registry(repo).resolve("latest", "svc")
            corrupt = store_version(repo, name="v3")
            assert corrupt.commit_hash != v3.commit_hash
            stored = repo / ".nexus" / "store" / corrupt.storage_uri
            stored.write_bytes(b"x" * stored.stat().st_size)
            for _ in range(600):
                failures = [e for e in await events(client) if e["event"] == "load_failed"]
                if len(failures) == 2:
                    break
                await asyncio.sleep(0.05)
            assert "sha256" in failures[-1]["reason"]
            await asyncio.sleep(0.2)
        assert set(load.statuses) == {200}
        assert set(load.batches) == {"v1"}
        assert sum(load.failed_items.values()) == 0
        kinds = [e["event"] for e in await events(client)]
        assert "canary" not in kinds
        assert "promoted" not in kinds


async def test_require_approval_keeps_unapproved_versions_out(repo: Path, tmp_path: Path) -> None:
    (repo / ".nexusrc").write_text("require_approval: true\n")
    v1 = store_version(repo, name="v1")
    registry = Registry(repo)
    async with running(repo, tmp_path, model_ref="staging") as client:
        registry.promote(v1.short_hash, "svc", "staging")
        refused = await wait_for_event(client, "refused")
        assert "pending_review; require_approval is on" in refused["reason"]
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "require_approval is on" in ready.json()["error"]

        registry.approve(v1.short_hash, "svc")
        await wait_for_event(client, "serving")
        v2 = store_version(repo, name="v2")
        registry.promote(v2.short_hash, "svc", "staging")
        for _ in range(100):
            kinds = [e["event"] for e in await events(client)]
            if kinds.count("refused") == 2:
                break
            await asyncio.sleep(0.05)
        assert kinds[-1] == "refused", kinds
        assert "loading" not in kinds[kinds.index("serving") :]
        assert await serving_name(client) == "v1"
        status = (await client.get("/model")).json()["rollout"]
        assert status["last_rollout"]["event"] == "refused"

        registry.reject(v2.short_hash, "svc", "bias found")
        rejected = None
        for _ in range(100):
            found = [e for e in await events(client) if "is rejected" in e.get("reason", "")]
            if found:
                rejected = found[-1]
                break
            await asyncio.sleep(0.05)
        assert rejected is not None
        assert "(bias found)" in rejected["reason"]


async def test_a_commit_ref_stays_pinned(repo: Path, tmp_path: Path) -> None:
    v1 = store_version(repo, name="v1")
    async with running(repo, tmp_path, model_ref=v1.short_hash) as client:
        await wait_for_event(client, "serving")
        store_version(repo, name="v2")
        await asyncio.sleep(0.5)
        assert [e["event"] for e in await events(client)] == ["loading", "serving"]
        assert (await client.get("/model")).json()["rollout"]["following"] is False
        assert await serving_name(client) == "v1"


async def test_admin_reload_checks_at_once_and_needs_the_token(repo: Path, tmp_path: Path) -> None:
    store_version(repo, name="v1")
    async with running(repo, tmp_path, poll_interval_s=3600, admin_token="s3cret") as client:
        await wait_for_event(client, "serving")
        v2 = store_version(repo, name="v2")
        assert (await client.post("/admin/reload")).status_code == 401
        wrong = await client.post("/admin/reload", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json() == {"error": "missing or wrong admin token (Bearer)."}
        done = await client.post("/admin/reload", headers={"authorization": "Bearer s3cret"})
        assert done.status_code == 200
        assert done.json()["candidate"]["version"]["commit_hash"] == v2.commit_hash
    async with running(repo, tmp_path) as client:
        assert (await client.post("/admin/reload")).status_code == 404


async def test_a_server_follows_a_git_remote(empty_repo: Path, tmp_path: Path) -> None:
    """The team pushes; a server with its own (initially empty) workspace fetches and rolls out."""
    shared_store = tmp_path / "shared-store"
    (empty_repo / ".nexusrc").write_text(f"provider: local\npath: {shared_store}\n")
    git(empty_repo, "add", ".nexusrc")
    git(empty_repo, "commit", "-q", "-m", "config")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(empty_repo, "remote", "add", "origin", str(remote))
    v1 = store_version(empty_repo, name="v1")
    git(empty_repo, "add", "-A")
    git(empty_repo, "commit", "-q", "-m", "store v1")
    git(empty_repo, "push", "-q", "origin", "main")

    workspace = tmp_path / "server-workspace"
    async with running(workspace, tmp_path, git_remote=str(remote), canary_percent=0) as client:
        first = await wait_for_event(client, "serving")
        assert first["version"]["commit_hash"] == v1.commit_hash
        v2 = store_version(empty_repo, name="v2")
        git(empty_repo, "add", "-A")
        git(empty_repo, "commit", "-q", "-m", "store v2")
        git(empty_repo, "push", "-q", "origin", "main")
        promoted = await wait_for_event(client, "promoted")
        assert promoted["version"]["commit_hash"] == v2.commit_hash
        assert await serving_name(client) == "v2"


def git_sync(source: Path, root: Path, n: int) -> None:
    """What the git-sync sidecar does on a new commit: check it out in a new folder, swap
    the `current` link to it at once, then delete the old folder."""
    subprocess.run(["git", "clone", "-q", str(source), str(root / f"wt-{n}")], check=True)
    (root / "current.new").symlink_to(f"wt-{n}")
    (root / "current.new").replace(root / "current")
    if n > 1:
        shutil.rmtree(root / f"wt-{n - 1}")


async def test_a_server_follows_a_git_sync_checkout(empty_repo: Path, tmp_path: Path) -> None:
    """The Kubernetes layout: the server's workspace is git-sync's `current` link, which moves
    to a new checkout on each commit while the old one is deleted."""
    (empty_repo / ".nexusrc").write_text(f"provider: local\npath: {tmp_path / 'store'}\n")
    git(empty_repo, "add", ".nexusrc")
    git(empty_repo, "commit", "-q", "-m", "config")
    v1 = store_version(empty_repo, name="v1")
    git(empty_repo, "add", "-A")
    git(empty_repo, "commit", "-q", "-m", "store v1")
    root = tmp_path / "git"
    root.mkdir()
    git_sync(empty_repo, root, 1)
    async with running(root / "current", tmp_path, canary_percent=0) as client:
        first = await wait_for_event(client, "serving")
        assert first["version"]["commit_hash"] == v1.commit_hash
        v2 = store_version(empty_repo, name="v2")
        git(empty_repo, "add", "-A")
        git(empty_repo, "commit", "-q", "-m", "store v2")
        git_sync(empty_repo, root, 2)
        promoted = await wait_for_event(client, "promoted")
        assert promoted["version"]["commit_hash"] == v2.commit_hash
        assert await serving_name(client) == "v2"
        v3 = store_version(empty_repo, name="v3")  # and the next commit too
        git(empty_repo, "add", "-A")
        git(empty_repo, "commit", "-q", "-m", "store v3")
        git_sync(empty_repo, root, 3)
        for _ in range(200):
            if await serving_name(client) == "v3":
                break
            await asyncio.sleep(0.05)
        promoted = await wait_for_event(client, "promoted")
        assert promoted["version"]["commit_hash"] == v3.commit_hash


async def test_nexus_deployment_watch_streams_new_events(repo: Path, tmp_path: Path) -> None:
    store_version(repo, name="v1")
    async with running(repo, tmp_path, canary_percent=0) as client:
        await wait_for_event(client, "serving")
        watch = await asyncio.create_subprocess_exec(
            console_script("nexus"),
            "deployment",
            str(client.base_url),
            "--watch",
            "--json",
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert watch.stdout is not None
            seen: list[str] = []
            store_version(repo, name="v2")
            async with asyncio.timeout(60):
                while "promoted" not in seen:
                    line = (await watch.stdout.readline()).decode()
                    seen.append(json.loads(line)["event"])  # JSON lines, nothing else
            assert seen == ["loading", "serving", "loading", "promoted"]
        finally:
            watch.terminate()
            await watch.wait()


def test_nexus_deployment_names_an_unreachable_server() -> None:
    done = subprocess.run(
        [console_script("nexus"), "deployment", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Error: cannot reach http://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_server_requiring_signed_approval_ignores_the_repositorys_nexusrc(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.registry.trust.keys import generate

    generate(tmp_path / "alice.key")
    generate(tmp_path / "mallory.key")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "alice.key.pub").rename(tmp_path / "trusted" / "alice.pub")
    # the repository says no approval is needed; the server's own environment says otherwise
    (repo / ".nexusrc").write_text("require_approval: false\nrequire_signed_approval: false\n")
    monkeypatch.setenv("NEXUS_TRUSTED_KEYS", str(tmp_path / "trusted"))
    monkeypatch.setenv("NEXUS_REQUIRE_SIGNED_APPROVAL", "true")
    v1 = store_version(repo, name="v1")
    registry = Registry(repo)
    registry.approve(v1.short_hash, "svc")  # approved in the metadata, but not signed
    async with running(repo, tmp_path) as client:
        refused = await wait_for_event(client, "refused")
        assert "has no signed approval; require_signed_approval is on" in refused["reason"]
        assert (await client.get("/ready")).status_code == 503

        registry.approve(v1.short_hash, "svc", key=tmp_path / "mallory.key")
        for _ in range(200):
            reasons = [e.get("reason", "") for e in await events(client)]
            if any("not among the trusted keys" in r for r in reasons):
                break
            await asyncio.sleep(0.05)
        assert any("(mallory), which is not among the trusted keys" in r for r in reasons)

        registry.approve(v1.short_hash, "svc", key=tmp_path / "alice.key")
        await wait_for_event(client, "serving")
        assert await serving_name(client) == "v1"
