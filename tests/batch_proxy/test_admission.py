"""API keys and rate limits at the proxy: the bucket on an exact clock, then over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from batch_proxy.admission import Admission, TokenBucket
from control_plane.cli import app as nexus_app
from nexus_common.keyfiles import KeyFileError, add_key, revoke_key


def test_the_bucket_admits_its_rate_after_its_burst() -> None:
    bucket = TokenBucket(rate=50, burst=10)
    admitted = 0
    for tick in range(2000):  # 200 requests/s for 10 s, on an exact clock
        if bucket.take(tick / 200) == 0.0:
            admitted += 1
    assert abs(admitted - (10 + 50 * 10)) <= 1  # burst + rate x time
    while bucket.take(10.0) == 0.0:
        pass
    assert 0 < bucket.take(10.0) <= 1 / 50


def test_records_are_digests_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "search", 50, None)
    assert key.startswith("nxk_")
    assert key not in path.read_text()
    assert oct(path.stat().st_mode)[-3:] == "600"
    with pytest.raises(KeyFileError, match="already has a key named 'search'"):
        add_key(path, "search", 50, None)
    gate = Admission(path)
    assert gate.admit(key, 0.0).status == 200
    assert gate.admit(key + "x", 0.0).status == 401
    assert gate.admit(None, 0.0).status == 401
    path.write_text('{"keys": [{"name": "a", "sha256": "zz", "rate": 1}]}')
    with pytest.raises(KeyFileError, match="no valid sha256"):
        Admission(path)


def test_nexus_keys_create_prints_the_key_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    result = CliRunner().invoke(
        nexus_app, ["keys", "create", "team", "--rate", "5", "--file", str(path)]
    )
    assert result.exit_code == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("nxk_")
    assert "\n" not in key
    assert Admission(path).admit(key, 0.0).status == 200
    listed = CliRunner().invoke(nexus_app, ["keys", "list", "--file", str(path), "--json"])
    assert json.loads(listed.stdout) == [{"name": "team", "rate": 5.0, "burst": 5.0}]


async def post(client: aiohttp.ClientSession, url: str, key: str | None, header: str = "bearer"):
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    async with client.post(url + "/predict", json={"x": 1}, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_keys_rates_metrics_and_revocation_over_http(
    sim, proxy, client, tmp_path: Path
) -> None:
    _, sim_url = sim
    path = tmp_path / "keys.json"
    slow = add_key(path, "slow", rate=2, burst=2)
    fast = add_key(path, "fast", rate=1000, burst=1000)
    async with proxy(upstreams=(sim_url,), api_keys=path) as (_, url):
        status, body, _ = await post(client, url, None)
        assert status == 401
        assert "API key" in body["error"]
        assert (await post(client, url, "nxk_wrong"))[0] == 401
        assert (await post(client, url, fast))[0] == 200
        assert (await post(client, url, fast, header="x-api-key"))[0] == 200

        results = [await post(client, url, slow) for _ in range(4)]
        assert [r[0] for r in results] == [200, 200, 429, 429]
        assert results[2][2]["Retry-After"] == "1"
        assert "over its rate" in results[2][1]["error"]
        assert (await post(client, url, fast))[0] == 200  # the other key is unaffected

        async with client.get(url + "/metrics") as resp:
            metrics = await resp.text()
        assert 'nexus_proxy_admissions_total{key="slow",outcome="rejected_429"} 2.0' in metrics
        assert 'nexus_proxy_admissions_total{key="fast",outcome="admitted"} 3.0' in metrics
        assert 'nexus_proxy_admissions_total{key="unknown",outcome="rejected_401"} 1.0' in metrics

        revoke_key(path, "fast")
        started = time.monotonic()
        while (await post(client, url, fast))[0] != 401:
            assert time.monotonic() - started < 2.0, "revocation took over 2 s"
            await asyncio.sleep(0.05)


async def test_a_limited_key_gets_its_rate_under_four_times_the_load(
    sim, proxy, client, tmp_path: Path
) -> None:
    """50 requests/s driven at 200/s: admitted = burst + 50 per second, the rest 429, and a
    second key under its own rate is never refused. Counts, not speed: the limiter runs on
    the proxy's clock, so the totals hold however loaded the machine is.

    The proxy shares this test's event loop, so a stall on a loaded machine delivers the
    requests sent meanwhile all at once. The second key's burst (a second of its traffic)
    absorbs that; with a burst of 5, a 0.15 s stall refused some of its requests in CI."""
    _, sim_url = sim
    path = tmp_path / "keys.json"
    limited = add_key(path, "limited", rate=50, burst=5)
    steady = add_key(path, "steady", rate=50, burst=40)
    seconds = 3.0
    async with proxy(upstreams=(sim_url,), api_keys=path) as (_, url):
        spans: dict[str, float] = {}

        async def drive(key: str, rate: float) -> list[int]:
            statuses: list[asyncio.Task[Any]] = []
            start = time.monotonic()
            for i in range(int(rate * seconds)):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                statuses.append(asyncio.create_task(post(client, url, key)))
            spans[key] = time.monotonic() - start  # first to last request sent
            return [(await t)[0] for t in statuses]

        started = time.monotonic()
        flood, calm = await asyncio.gather(drive(limited, 200), drive(steady, 40))
        elapsed = time.monotonic() - started
    admitted = flood.count(200)
    assert flood.count(429) == len(flood) - admitted
    # Never more than the burst and the rate over the whole run allow; and, however late a
    # loaded machine delivered the requests, nearly what the sending window earned.
    assert admitted <= 5 + 50 * elapsed + 2, (admitted, elapsed)
    assert admitted >= 0.8 * (5 + 50 * spans[limited]), (admitted, spans[limited])
    assert calm.count(200) == len(calm)


async def test_only_the_proxy_can_call_a_server_with_a_token(
    repo: Path, tmp_path: Path, proxy, client
) -> None:
    """NEXUS_SERVER_TOKEN on the model server, the same token as the proxy's upstream token:
    callers get through the proxy, and are refused going around it."""
    from control_plane import Registry
    from model_server.app import create_app
    from model_server.settings import ServerSettings
    from tests.harness.servers import serve_in_process

    (tmp_path / "w.bin").write_bytes(b"any bytes: the handler ignores them")
    Registry(repo).store(tmp_path / "w.bin", "echo")
    settings = ServerSettings(
        repo=repo,
        cache_dir=tmp_path / "cache",
        handler="tests.model_server.handlers:SlowEcho",
        server_token="s3cret",
    )
    async with serve_in_process(create_app(settings), lifespan="on") as server_url:
        for _ in range(200):
            async with client.get(server_url + "/ready") as ready:
                if ready.status == 200:
                    break
            await asyncio.sleep(0.05)
        async with client.post(server_url + "/predict/batch", json={"inputs": [1]}) as direct:
            assert direct.status == 401
            assert "call through the proxy" in (await direct.json())["error"]
        async with (
            proxy(upstreams=(server_url,), upstream_token="s3cret") as (_, url),
            client.post(url + "/predict", json=1) as through,
        ):
            assert through.status == 200, await through.text()
