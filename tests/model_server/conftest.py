from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from control_plane import Registry
from model_server.app import create_app
from model_server.settings import ServerSettings
from tests.harness.models import TinyMLP, make_onnx, make_state_dict, make_torchscript
from tests.harness.servers import serve_in_process


@pytest.fixture
def stored(repo: Path, tmp_path: Path) -> dict[str, torch.nn.Module]:
    """Real tiny models stored with the real Registry in the test's Git repo."""
    registry = Registry(repo)
    models: dict[str, torch.nn.Module] = {}
    for name, maker, filename in (
        ("mlp_ts", make_torchscript, "mlp.pt"),
        ("mlp_onnx", make_onnx, "mlp.onnx"),
        ("mlp_state", make_state_dict, "state.pt"),
    ):
        path = tmp_path / filename
        models[name] = maker(path)
        registry.store(path, name)
    pickled = tmp_path / "pickled.pt"
    module = TinyMLP().eval()
    torch.save(module, pickled)
    registry.store(pickled, "mlp_pickle")
    models["mlp_pickle"] = module
    return models


ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> ServerFactory:
    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        overrides.setdefault("cache_dir", tmp_path / "cache")
        settings = ServerSettings(repo=repo, **overrides)
        async with (
            serve_in_process(create_app(settings), lifespan="on") as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            for _ in range(300):
                ready = await client.get("/ready")
                if ready.status_code == 200:
                    break
                await __import__("asyncio").sleep(0.05)
            yield client

    return start
