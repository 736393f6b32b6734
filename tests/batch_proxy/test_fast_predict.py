"""Predictions answered in the HTTP protocol (batch_proxy/fast_predict.py), over raw sockets:
what uvicorn's ASGI cycle gave them must still hold."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import re
from collections.abc import AsyncIterator
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.server import ServerState

from batch_proxy.app import ProxyApp
from batch_proxy.settings import ProxySettings
from tests.harness.servers import serve_in_process, serve_proxy


def request(body: bytes, path: str = "/predict", *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "host: proxy", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Replies:
    """Replies read off one connection, in the order they came."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._body = b""

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self._parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""


async def read_replies(reader: asyncio.StreamReader, count: int) -> Replies:
    replies = Replies()
    async with asyncio.timeout(10):
        while len(replies.done) < count:
            data = await reader.read(65536)
            assert data, f"the proxy closed the connection after {len(replies.done)} replies"
            replies.feed(data)
    return replies


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(sim, proxy) -> None:
    _, sim_url = sim
    async with proxy(upstreams=(sim_url,)) as (_, url), connection(url) as (reader, writer):
        writer.write(
            request(b'{"n": 1}')
            + request(b"{not json")
            + b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n"  # the ASGI app's, in between
            + request(b'{"n": 2}', "/predict", "x-priority: 9")
            + request(b'{"n": 3}')
        )
        replies = await read_replies(reader, 5)
    statuses = [status for status, _, _ in replies.done]
    bodies = [orjson.loads(body) for _, _, body in replies.done]
    assert statuses == [200, 400, 200, 400, 200]
    assert bodies[0]["output"] == {"echo": {"n": 1}}
    assert "not valid JSON" in bodies[1]["error"]
    assert bodies[2] == {"status": "ok"}
    assert "priority must be a whole number from 1 to" in bodies[3]["error"]
    assert bodies[4]["output"] == {"echo": {"n": 3}}


async def test_http_1_0_is_answered_then_closed(sim, proxy) -> None:
    _, sim_url = sim
    async with proxy(upstreams=(sim_url,)) as (_, url), connection(url) as (reader, writer):
        writer.write(request(b'{"n": 1}', version="1.0"))
        async with asyncio.timeout(10):
            raw = await reader.read()  # to the end: the proxy closes after its answer
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["output"] == {"echo": {"n": 1}}


async def test_expect_100_continue_is_served(sim, proxy) -> None:
    _, sim_url = sim
    body = b'{"n": 1}'
    async with proxy(upstreams=(sim_url,)) as (_, url), connection(url) as (reader, writer):
        head = f"POST /predict HTTP/1.1\r\nhost: p\r\ncontent-length: {len(body)}\r\n"
        writer.write(head.encode() + b"expect: 100-continue\r\n\r\n")
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(body)
        replies = await read_replies(reader, 1)
    assert replies.done[0][0] == 200


async def test_a_body_over_the_limit_is_refused_before_it_is_all_sent(sim, proxy) -> None:
    model, sim_url = sim
    async with (
        proxy(upstreams=(sim_url,), max_body_bytes=100) as (_, url),
        connection(url) as (reader, writer),
    ):
        head = b"POST /predict HTTP/1.1\r\nhost: p\r\ncontent-length: 100000\r\n\r\n"
        writer.write(head + b"[" + b"1," * 200)  # the rest is never sent
        replies = await read_replies(reader, 1)
    status, headers, body = replies.done[0]
    assert status == 413
    assert orjson.loads(body) == {"error": "the body is over 100 bytes."}
    assert headers["content-type"] == "application/json"
    assert model.batches == []


async def test_a_body_of_megabytes_under_the_limit_is_read_whole_and_answered(sim, proxy) -> None:
    """uvicorn pauses reading past 64 KiB until an app receives; the fast path has no app
    receiving, so it must read on (a 3 MB image as JSON waited for the 408 deadline)."""
    model, sim_url = sim
    item = orjson.dumps({"input": [0.5] * 400_000})  # 2.4 MB
    async with proxy(upstreams=(sim_url,)) as (_, url), connection(url) as (reader, writer):
        writer.write(request(item))
        replies = await read_replies(reader, 1)
    status, _, body = replies.done[0]
    assert status == 200, body[:200]
    assert len(model.batches) == 1


async def test_a_caller_that_leaves_is_never_sent_and_its_connection_is_let_go(sim, proxy) -> None:
    model, sim_url = sim
    model.latency_s = 0.3
    async with proxy(upstreams=(sim_url,), max_inflight=1) as (app, url):
        async with connection(url) as (reader, writer):
            writer.write(request(b'"first"'))
            await asyncio.sleep(0.1)  # "first" runs on the model
        async with connection(url) as (_, gone):
            gone.write(request(b'"gone"'))
            await asyncio.sleep(0.05)
        # its item waits behind "first"; the client has closed its socket
        await asyncio.sleep(0.5)
        async with connection(url) as (reader, writer):
            writer.write(request(b'"later"'))
            replies = await read_replies(reader, 1)
        assert replies.done[0][0] == 200
        assert app.router.queue_depth == 0
    sent = [x for b in model.batches for x in b["inputs"]]
    assert "gone" not in sent
    assert sent == ["first", "later"]


async def test_the_answer_is_the_asgi_apps_answer(sim) -> None:
    """The same requests to the same settings, answered in the protocol and by the ASGI app:
    the same statuses, bodies and headers (but the date)."""
    _, sim_url = sim
    asks: list[tuple[str, bytes, tuple[str, ...]]] = [
        ("/predict", b'{"n": 1}', ()),
        ("/predict", b"{not json", ()),
        ("/predict", b"1" * 200, ()),
        ("/predict", b"1", ("x-priority: 0",)),
        ("/models/other/predict", b"1", ()),
        ("/models/default/predict", b'{"n": 2}', ()),
        ("/predict", b'{"bad": 1}', ()),
    ]

    async def answers(serve: Any) -> list[tuple[int, dict[str, str], bytes]]:
        app = ProxyApp(ProxySettings(upstreams=(sim_url,), max_body_bytes=100))
        async with serve(app) as url, connection(url) as (reader, writer):
            got = []
            for path, body, extra in asks:
                writer.write(request(body, path, *extra))
                got.append((await read_replies(reader, 1)).done[0])
        for _, headers, _ in got:
            headers.pop("date", None)
        return got

    def plain(app: ProxyApp) -> contextlib.AbstractAsyncContextManager[str]:
        return serve_in_process(app, lifespan="on")

    fast, asgi = await answers(serve_proxy), await answers(plain)
    assert [status for status, _, _ in fast] == [200, 400, 413, 400, 200, 200, 422]
    assert fast == asgi


async def test_a_bug_is_a_500_and_the_connection_goes_on(sim, proxy, monkeypatch) -> None:
    _, sim_url = sim
    async with proxy(upstreams=(sim_url,)) as (app, url), connection(url) as (reader, writer):
        real = app.predict_submit

        def broken(*args: Any) -> Any:
            raise RuntimeError("injected")

        monkeypatch.setattr(app, "predict_submit", broken)
        writer.write(request(b'{"n": 1}'))
        failed = (await read_replies(reader, 1)).done[0]
        monkeypatch.setattr(app, "predict_submit", real)
        writer.write(request(b'{"n": 2}'))
        after = (await read_replies(reader, 1)).done[0]
    assert failed[0] == 500
    assert orjson.loads(failed[2]) == {"error": "the proxy failed: injected."}
    assert after[0] == 200


async def test_a_long_pipeline_of_refusals_behind_a_waiting_request(sim, proxy) -> None:
    """Answers written at once (here, 400s) start the next pipelined request from the loop,
    not from inside the previous answer: 2,000 of them must not recurse 2,000 deep."""
    _, sim_url = sim
    async with proxy(upstreams=(sim_url,)) as (_, url), connection(url) as (reader, writer):
        writer.write(request(b'{"n": 1}') + request(b"{not json") * 2000)
        replies = await read_replies(reader, 2001)
    assert [status for status, _, _ in replies.done] == [200] + [400] * 2000


async def test_a_request_leaves_no_reference_cycle_behind(sim, proxy) -> None:
    """Requests are freed as they end, not by the garbage collector: a cycle per request
    made a collection on every batch's return trip (slow_clients.CONNECTION is a weak
    proxy for that)."""
    _, sim_url = sim
    probe = b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n"  # the ASGI app's way
    async with proxy(upstreams=(sim_url,)) as (_, url), connection(url) as (reader, writer):
        gc.collect()
        gc.disable()
        try:
            writer.write((request(b'{"n": 1}') + probe) * 10)
            replies = await read_replies(reader, 20)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = [o for o in gc.garbage if type(o).__name__ == "RequestResponseCycle"]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert [status for status, _, _ in replies.done] == [200] * 20
    assert left == []


# What FastPredictProtocol (and slow_clients' GuardedProtocol) use of uvicorn below its
# public interface. uvicorn is pinned to a tested range; a release that renames one of these
# fails here, by name, before any request does.
PROTOCOL_METHODS = (
    "_start_asgi_task", "connection_made", "connection_lost", "on_message_begin",
    "on_headers_complete", "on_body", "on_message_complete", "on_response_complete",
)  # fmt: skip
PROTOCOL_STATE = ("cycle", "pipeline", "server_state", "tasks", "loop", "flow", "transport")
CYCLE_STATE = (
    "scope", "body", "more_body", "waiting_for_100_continue", "response_started",
    "response_complete", "message_event", "disconnected", "keep_alive", "on_response", "flow",
)  # fmt: skip


def test_the_uvicorn_internals_the_fast_path_uses_are_there() -> None:
    protocol, cycle = httptools_impl.HttpToolsProtocol, httptools_impl.RequestResponseCycle
    for name in PROTOCOL_METHODS:
        assert callable(getattr(protocol, name, None)), f"HttpToolsProtocol.{name} is gone"
    for owner, names in ((protocol, PROTOCOL_STATE), (cycle, CYCLE_STATE)):
        source = inspect.getsource(owner)
        for name in names:
            assert re.search(rf"self\.{name}\b\s*[:=]", source), (
                f"{owner.__name__} no longer sets self.{name}"
            )
    assert set(httptools_impl.STATUS_LINE) >= {200, 400, 413, 429, 503, 504}, "STATUS_LINE"
    assert "default_headers" in inspect.getsource(ServerState), "ServerState.default_headers"
    assert "write_paused" in inspect.getsource(FlowControl), "FlowControl.write_paused"
