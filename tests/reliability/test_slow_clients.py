"""Slow clients, oversized and deeply nested bodies against both servers as processes.

A client that sends its headers or its body a byte at a time, or nothing at all, gets a
408 and loses its connection once `--read-timeout-s` has passed, while a well-behaved
client beside it is answered throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.stack import model_server, proxy

READ_TIMEOUT_S = 1.0
LIMIT = 4096
FLAGS = ("--read-timeout-s", str(READ_TIMEOUT_S), "--max-body-bytes", str(LIMIT))


@pytest.fixture
def servers(repo: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    with (
        model_server(repo, tmp_path / "cache", *FLAGS) as server,
        proxy(server, flags=FLAGS) as front,
    ):
        yield {"model server": server, "proxy": front}


async def _trickle(base: str, request: bytes, at_once: int = 0, every_s: float = 0.1) -> bytes:
    """Send `request`'s first `at_once` bytes, then the rest a byte every `every_s`; read what
    the server says until it closes."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request[:at_once])

    async def send_slowly() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in request[at_once:]:
                await asyncio.sleep(every_s)
                writer.write(bytes([byte]))

    sender = asyncio.get_running_loop().create_task(send_slowly())
    try:
        return await asyncio.wait_for(reader.read(), READ_TIMEOUT_S * 5)
    finally:
        sender.cancel()
        writer.close()


def _post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    return head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body


async def _well_behaved(base: str, until: asyncio.Event) -> list[int]:
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        while not until.is_set():
            reply = await client.post("/predict", json={"x": len(statuses)})
            statuses.append(reply.status_code)
            await asyncio.sleep(0.05)
    return statuses


@pytest.mark.parametrize("server", ["model server", "proxy"])
async def test_slow_clients_get_408_and_others_are_served(servers, server: str) -> None:
    base = servers[server]
    done = asyncio.Event()
    others = asyncio.get_running_loop().create_task(_well_behaved(base, done))
    request = _post("/predict", b'{"x": 1}')
    silent = _trickle(base, b"")
    slow_headers = [_trickle(base, request) for _ in range(10)]
    body_at = request.index(b"\r\n\r\n") + 4
    slow_body = [_trickle(base, request, at_once=body_at, every_s=0.3) for _ in range(10)]
    answers = await asyncio.gather(silent, *slow_headers, *slow_body)
    done.set()
    statuses = await others
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b"did not arrive within 1 s" in answer
    assert len(statuses) >= 10
    assert set(statuses) == {200}


@pytest.mark.parametrize("server", ["model server", "proxy"])
def test_bodies_over_the_limit_and_deeply_nested_json(servers, server: str) -> None:
    base = servers[server]
    huge = b'{"x": "' + b"a" * LIMIT + b'"}'
    over = httpx.post(base + "/predict", content=huge, timeout=10)
    assert over.status_code == 413
    assert over.json() == {"error": f"the body is over {LIMIT} bytes."}

    def chunks() -> Iterator[bytes]:  # no content-length: chunked
        yield huge[: LIMIT // 2]
        yield huge[LIMIT // 2 :]

    chunked = httpx.post(base + "/predict", content=chunks(), timeout=10)
    assert chunked.status_code == 413
    nested = b"[" * 1500 + b"]" * 1500  # orjson refuses over 1,024 levels
    deep = httpx.post(base + "/predict", content=nested, timeout=10)
    assert deep.status_code == 400
    assert "not valid JSON" in deep.json()["error"]
    fine = httpx.post(base + "/predict", json={"x": 1}, timeout=10)
    assert fine.status_code == 200
