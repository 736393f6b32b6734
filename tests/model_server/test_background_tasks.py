"""Nothing dies silently: a metadata file that cannot be parsed or read is waited out, and a
background loop that crashes is logged, restarted and named in /health until it recovers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from model_server.delivery.watch import FileWatcher
from tests.harness.faults import store_version
from tests.model_server.test_delivery import running, serving_name, wait_for_event


async def wait_for_health(client, status: int, timeout_s: float = 20.0):
    for _ in range(int(timeout_s / 0.05)):
        reply = await client.get("/health")
        if reply.status_code == status:
            return reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"/health did not answer {status} within {timeout_s} s: {reply.text}")


async def test_a_broken_metadata_file_is_waited_out_and_picked_up_once_fixed(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_version(repo, name="v1")
    meta = repo / ".nexus_meta.json"
    async with running(repo, tmp_path, canary_percent=0) as client:
        await wait_for_event(client, "serving")
        good = meta.read_bytes()
        store_version(repo, name="v2")  # the next version, hidden behind a hand edit
        fixed = meta.read_bytes()
        with caplog.at_level(logging.WARNING, logger="nexus.model_server"):
            meta.write_bytes(good[:-20])
            broken = await wait_for_event(client, "metadata_unreadable")
            assert str(meta) in broken["reason"]
            await asyncio.sleep(0.5)  # five more polls: said once, not once a poll
        said = [r for r in caplog.records if "metadata_unreadable" not in r.getMessage()]
        assert len([r for r in said if str(meta) in r.getMessage()]) == 1, caplog.text
        state = (await client.get("/deployment")).json()
        assert state["waiting"]["event"] == "metadata_unreadable"
        assert (await client.get("/health")).status_code == 200  # expected, not a crash
        assert await serving_name(client) == "v1"  # the serving version goes on

        meta.write_bytes(fixed)
        await wait_for_event(client, "promoted")
        assert await serving_name(client) == "v2"
        assert (await client.get("/deployment")).json()["waiting"] is None


async def test_a_metadata_file_unreadable_at_start_is_waited_on_not_fatal(
    repo: Path, tmp_path: Path
) -> None:
    store_version(repo, name="v1")
    meta = repo / ".nexus_meta.json"
    data = meta.read_bytes()
    meta.unlink()
    meta.mkdir()  # reading it fails with an OSError, for root too
    async with running(repo, tmp_path, canary_percent=0) as client:
        await wait_for_event(client, "metadata_unreadable")
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "cannot read" in ready.json()["error"]
        meta.rmdir()
        meta.write_bytes(data)
        await wait_for_event(client, "serving")
        assert await serving_name(client) == "v1"


async def test_a_crashed_follower_is_restarted_and_named_in_health_until_then(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store_version(repo, name="v1")
    real = FileWatcher.changed
    crashes = 3

    def crashing(self: FileWatcher) -> bool:
        nonlocal crashes
        if crashes and (repo / "crash").exists():
            crashes -= 1
            raise RuntimeError("a bug in the watcher")
        return real(self)

    monkeypatch.setattr(FileWatcher, "changed", crashing)
    async with running(repo, tmp_path, canary_percent=0) as client:
        await wait_for_event(client, "serving")
        assert (await client.get("/health")).status_code == 200
        (repo / "crash").touch()
        down = await wait_for_health(client, 503)
        assert down.json()["tasks"] == {"follower": "RuntimeError: a bug in the watcher"}
        assert "follower" in down.json()["error"]
        assert await serving_name(client) == "v1"  # serving goes on meanwhile
        await wait_for_health(client, 200, timeout_s=30)
        store_version(repo, name="v2")  # following works again, without a restart
        await wait_for_event(client, "promoted")
    tracebacks = [r for r in caplog.records if r.exc_info and "follower" in r.getMessage()]
    assert len(tracebacks) == 1  # the same crash three times: one traceback
