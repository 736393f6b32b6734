"""Background loops never die silently: logged, restarted with backoff, named while down."""

from __future__ import annotations

import asyncio
import logging

import pytest

from batch_proxy.upstream import UpstreamPool
from nexus_common.supervise import Supervisor

logger = logging.getLogger("test.supervise")


async def until(condition, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


async def test_a_crashing_loop_is_restarted_named_while_down_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    healthy = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError("the disk went away")
        healthy.set()
        await asyncio.Event().wait()

    supervisor = Supervisor(logger, backoff_s=(0.01, 0.02), settle_s=0.1)
    supervisor.start("watcher", loop)
    await until(lambda: "watcher" in supervisor.down)
    status, body = supervisor.health()
    assert status == 503
    assert body["tasks"] == {"watcher": "OSError: the disk went away"}
    assert "watcher" in body["error"]
    await healthy.wait()
    assert "watcher" in supervisor.down  # a new run is not recovered until it has lasted
    await until(lambda: not supervisor.down)
    assert supervisor.health() == (200, {"status": "ok"})
    await supervisor.stop()
    assert runs == 4
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # the same error three times: one traceback
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_a_new_error_gets_its_own_traceback_and_a_name_is_started_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = [ValueError("one"), KeyError("two")]

    async def loop() -> None:
        if errors:
            raise errors.pop(0)
        await asyncio.Event().wait()

    supervisor = Supervisor(logger, backoff_s=(0.01,), settle_s=0.05)
    supervisor.start("x", loop)
    with pytest.raises(ValueError, match="already running"):
        supervisor.start("x", loop)
    await until(lambda: not errors and not supervisor.down)
    await supervisor.stop()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.exc_text and r.exc_text.splitlines()[-1] for r in tracebacks] == [
        "ValueError: one",
        "KeyError: 'two'",
    ]


async def test_the_proxys_health_checks_crash_and_come_back(
    sim, proxy, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sim_url = sim
    real = UpstreamPool.check_all
    crashes = 2

    async def crashing(self: UpstreamPool) -> None:
        nonlocal crashes
        if crashes:
            crashes -= 1
            raise RuntimeError("a bug in the health checks")
        await real(self)

    async with proxy(upstreams=(sim_url,), health_interval_s=0.05) as (_, url):
        monkeypatch.setattr(UpstreamPool, "check_all", crashing)
        seen: list[int] = []
        for _ in range(1000):
            async with client.get(url + "/health") as reply:
                seen.append(reply.status)
                body = await reply.json()
            if reply.status == 503:
                assert body["tasks"] == {
                    "health-checks[default]": "RuntimeError: a bug in the health checks"
                }
            if 503 in seen and reply.status == 200:
                break
            await asyncio.sleep(0.02)
        assert seen[0] == 200, seen
        assert 503 in seen, seen
        assert seen[-1] == 200, seen
        async with client.post(url + "/predict", json={"id": 1}) as reply:
            assert reply.status == 200
