"""Upstreams found in DNS, with a resolver the test controls.

The replicas are simulated model servers on 127.0.0.2 and 127.0.0.3 (both loopback on
Linux) at one port, as a headless Service's pods would be; the test's resolver is the
DNS, answering whatever addresses the test says the name has now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from batch_proxy.app import ProxyApp
from batch_proxy.discovery import system_resolver, upstream_url
from batch_proxy.errors import SettingsError
from batch_proxy.settings import ProxySettings, settings_from
from tests.harness.servers import free_port, serve_in_process, serve_proxy
from tests.harness.sim_model import SimModel

NAME = "model-server-headless"
A, B = "127.0.0.2", "127.0.0.3"


class FakeDns:
    """The addresses the name has now; `failing` makes each look-up fail."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.failing = False
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        assert host == NAME
        self.lookups += 1
        if self.failing:
            raise OSError("Temporary failure in name resolution")
        return list(self.addresses)

    async def looked_up(self, times: int = 2) -> None:
        """Until `times` more look-ups have been answered (bounded)."""
        target = self.lookups + times
        await until(lambda: self.lookups >= target)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def replicas(*models: SimModel) -> AsyncIterator[int]:
    """Each model served on its own loopback address (A, B, ...), all on one port."""
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        for model, address in zip(models, (A, B), strict=False):
            await stack.enter_async_context(serve_in_process(model, host=address, port=port))
        yield port


@contextlib.asynccontextmanager
async def proxy_over(dns: FakeDns, port: int) -> AsyncIterator[tuple[ProxyApp, str]]:
    # Health checks every 0.5 s (1 s to answer): the replicas, the proxy and the test share one
    # event loop, and under a loaded CI machine a 0.4 s deadline took a healthy replica out.
    settings = ProxySettings(
        upstream_dns=(f"{NAME}:{port}",), dns_interval_s=0.05, health_interval_s=0.5
    )
    app = ProxyApp(settings, resolver=dns)
    async with serve_proxy(app) as url:
        yield app, url


def predict_all(
    client: aiohttp.ClientSession, url: str, n: int
) -> Awaitable[list[tuple[int, dict[str, object]]]]:
    async def one(i: int) -> tuple[int, dict[str, object]]:
        async with client.post(url + "/predict", json={"i": i}) as reply:
            return reply.status, await reply.json()

    return asyncio.gather(*(one(i) for i in range(n)))


async def test_a_new_replica_joins_once_ready_and_not_before(
    client: aiohttp.ClientSession,
) -> None:
    first, second = SimModel(latency_ms=5), SimModel(latency_ms=5)
    second.ready = False  # still loading its model
    dns = FakeDns(A)
    async with replicas(first, second) as port, proxy_over(dns, port) as (app, url):
        pool = app.router.pools[None]
        assert pool.urls == {upstream_url(A, port)}
        dns.addresses.append(B)
        await dns.looked_up()
        answers = await predict_all(client, url, 64)
        assert {status for status, _ in answers} == {200}
        assert second.batches == []  # named in DNS, but not ready: no batch
        assert pool.urls == {upstream_url(A, port)}

        second.ready = True
        await until(lambda: len(pool.urls) == 2)
        async with client.get(url + "/metrics") as reply:
            assert "nexus_proxy_ready_upstreams 2.0" in await reply.text()
        for _ in range(20):  # both take batches now (bounded: each round is 64 items)
            assert {s for s, _ in await predict_all(client, url, 64)} == {200}
            if second.batches:
                break
        assert second.batches
        assert first.batches


async def test_a_removed_replica_is_drained_without_failing_its_batches(
    client: aiohttp.ClientSession,
) -> None:
    fast, slow = SimModel(latency_ms=5), SimModel(latency_ms=400)
    dns = FakeDns(A, B)
    async with replicas(fast, slow) as port, proxy_over(dns, port) as (app, url):
        pool = app.router.pools[None]
        leaving = upstream_url(B, port)
        load = asyncio.ensure_future(predict_all(client, url, 200))
        await until(lambda: any(u.url == leaving and u.outstanding for u in pool.upstreams))
        dns.addresses.remove(B)
        await until(lambda: leaving not in pool.urls)
        draining = [u for u in pool.upstreams if u.url == leaving]
        assert draining
        assert draining[0].draining
        assert draining[0].outstanding > 0
        answers = await load
        assert [status for status, _ in answers] == [200] * 200  # in-flight batches finished
        assert all(u.url != leaving for u in pool.upstreams)  # forgotten once drained
        seen = len(slow.batches)
        assert {s for s, _ in await predict_all(client, url, 64)} == {200}
        assert len(slow.batches) == seen  # no new batch for the drained replica


async def test_a_failed_lookup_keeps_the_replicas_found_before(
    client: aiohttp.ClientSession,
) -> None:
    model = SimModel(latency_ms=5)
    dns = FakeDns(A)
    async with replicas(model) as port, proxy_over(dns, port) as (app, url):
        dns.failing = True
        await dns.looked_up()
        assert app.router.pools[None].urls == {upstream_url(A, port)}
        assert {s for s, _ in await predict_all(client, url, 8)} == {200}
        async with client.get(url + "/ready") as reply:
            assert reply.status == 200


async def test_no_address_yet_is_not_ready_and_says_why(client: aiohttp.ClientSession) -> None:
    dns = FakeDns()
    async with proxy_over(dns, free_port()) as (_, url):
        async with client.get(url + "/ready") as reply:
            assert reply.status == 503
        async with client.post(url + "/predict", json=1) as reply:
            assert reply.status == 502  # as with every upstream down: at once, not a wait
            assert f"no ready address found yet for {NAME}" in (await reply.json())["error"]
        async with client.get(url + "/metrics") as reply:
            text = await reply.text()
        assert "nexus_proxy_queue_depth_per_upstream 0.0" in text  # present when idle


async def test_the_system_resolver_answers_from_the_hosts_file() -> None:
    assert "127.0.0.1" in await system_resolver("localhost", 80)  # no DNS server asked


def test_upstream_dns_settings() -> None:
    settings = settings_from([], {"NEXUS_PROXY_UPSTREAM_DNS": "resnet=rn-headless:8000"})
    assert settings.dns_names == {"resnet": ("rn-headless", 8000)}
    assert settings.upstreams == ()  # no default upstream beside the DNS name
    assert settings_from([]).upstreams == ("http://127.0.0.1:8000",)
    with pytest.raises(SettingsError, match="is not HOST:PORT"):
        settings_from(["--upstream-dns", "model-server-headless"])
    with pytest.raises(SettingsError, match="dns_interval_s must be positive"):
        settings_from(["--upstream-dns", "m:8000", "--dns-interval-s", "0"])
