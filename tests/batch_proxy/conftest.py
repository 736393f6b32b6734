from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from batch_proxy.app import ProxyApp
from batch_proxy.settings import ProxySettings
from tests.harness.servers import serve_in_process, serve_proxy
from tests.harness.sim_model import SimModel


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimModel, str]]:
    model = SimModel(latency_ms=20)
    async with serve_in_process(model) as url:
        yield model, url


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


ProxyFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[ProxyApp, str]]]


@pytest.fixture
def proxy() -> ProxyFactory:
    @contextlib.asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[tuple[ProxyApp, str]]:
        settings.setdefault("health_interval_s", 0.2)
        app = ProxyApp(ProxySettings(**settings))
        async with serve_proxy(app) as url:
            yield app, url

    return start
