"""Several models behind one proxy: a queue per model, upstreams per model or shared, and
never a batch that mixes models (every upstream batch is checked)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from batch_proxy.routing import QUEUES_MAX
from tests.batch_proxy.conftest import ProxyFactory
from tests.harness.servers import serve_in_process
from tests.harness.sim_model import SimModel


@contextlib.asynccontextmanager
async def sims(count: int) -> AsyncIterator[list[tuple[SimModel, str]]]:
    async with contextlib.AsyncExitStack() as stack:
        found = []
        for _ in range(count):
            model = SimModel(latency_ms=10)
            found.append((model, await stack.enter_async_context(serve_in_process(model))))
        yield found


async def ask(client: aiohttp.ClientSession, url: str, item: dict[str, object]) -> Any:
    async with client.post(url, json=item) as reply:
        body = await reply.json()
        assert reply.status == 200, body
        return body


async def test_three_models_never_share_a_batch(
    proxy: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async with sims(3) as upstreams:
        named = tuple(f"{m}={url}" for m, (_, url) in zip("abc", upstreams, strict=True))
        async with proxy(upstreams=named) as (_, url):
            calls = [
                ask(client, f"{url}/models/{m}/predict", {"model": m, "i": i})
                for i in range(60)
                for m in "abc"
            ]
            answers = await asyncio.gather(*calls)
            ready = await (await client.get(url + "/ready")).json()
    assert ready["models"] == {"a": True, "b": True, "c": True}
    for answer, (m, i) in zip(answers, [(m, i) for i in range(60) for m in "abc"], strict=True):
        assert answer["output"] == {"echo": {"model": m, "i": i}}
    for m, (sim, _) in zip("abc", upstreams, strict=True):
        assert sim.batches, f"model {m}'s upstream got nothing"
        for batch in sim.batches:
            assert {item["model"] for item in batch["inputs"]} == {m}
        assert sum(b["size"] for b in sim.batches) == 60
        assert len(sim.batches) < 60  # batched, not one by one


async def test_shared_upstreams_get_the_model_in_the_path(
    proxy: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async with sims(2) as [(shared, shared_url), (own, own_url)]:
        upstreams = (shared_url, f"a={own_url}")
        async with proxy(upstreams=upstreams) as (_, url):
            calls = [ask(client, f"{url}/models/b/predict", {"model": "b"}) for _ in range(20)]
            calls += [ask(client, f"{url}/models/a/predict", {"model": "a"}) for _ in range(20)]
            calls += [ask(client, f"{url}/predict", {"model": None}) for _ in range(20)]
            await asyncio.gather(*calls)
    assert {item["model"] for b in own.batches for item in b["inputs"]} == {"a"}
    for batch in shared.batches:
        assert {item["model"] for item in batch["inputs"]} == {batch["model"]}
    assert sum(b["size"] for b in shared.batches if b["model"] == "b") == 20
    assert sum(b["size"] for b in shared.batches if b["model"] is None) == 20


async def test_a_model_nobody_serves_is_a_404(
    proxy: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async with sims(1) as [(_, sim_url)], proxy(upstreams=(f"a={sim_url}",)) as (_, url):
        async with client.post(f"{url}/models/zzz/predict", json={}) as reply:
            assert reply.status == 404
            assert (
                "no upstream serves model 'zzz' (this proxy serves a)"
                in (await reply.json())["error"]
            )
        # the only named model is the default
        assert (await ask(client, f"{url}/predict", {"x": 1}))["output"] == {"echo": {"x": 1}}


async def test_ready_names_the_shared_upstreams(
    proxy: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    async with sims(1) as [(_, sim_url)], proxy(upstreams=(sim_url,)) as (_, url):
        reply = await client.get(url + "/ready")
        assert reply.status == 200
        assert (await reply.json())["models"] == {"shared": True}


async def test_names_tried_once_do_not_lock_new_models_out(
    proxy: ProxyFactory, client: aiohttp.ClientSession
) -> None:
    """Found by schemathesis: queues were kept forever, so QUEUES_MAX made-up names at a
    shared upstream refused every new model until a restart. Idle queues are now dropped
    when the table is full; only when every queue has work is a new one refused (429)."""
    sim = SimModel(latency_ms=10, concurrency=QUEUES_MAX)  # every queue's batch at once
    async with serve_in_process(sim) as sim_url, proxy(upstreams=(sim_url,)) as (_, url):
        for i in range(QUEUES_MAX + 6):
            await ask(client, f"{url}/models/tried{i}/predict", {"i": i})
        assert (await ask(client, f"{url}/models/real/predict", {"x": 1}))["output"] == {
            "echo": {"x": 1}
        }
        sim.latency_s = 0.5  # now every queue holds work for a while
        busy = [
            asyncio.ensure_future(ask(client, f"{url}/models/busy{i}/predict", {"i": i}))
            for i in range(QUEUES_MAX - 1)  # the default queue is the 64th
        ]
        await asyncio.sleep(0.2)
        async with client.post(f"{url}/models/one-too-many/predict", json={}) as reply:
            assert reply.status == 429
            assert "retry shortly" in (await reply.json())["error"]
            assert reply.headers["Retry-After"]
        await asyncio.gather(*busy)
        assert (await ask(client, f"{url}/models/one-too-many/predict", {"y": 2}))["output"]
