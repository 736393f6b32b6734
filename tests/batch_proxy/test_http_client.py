"""The proxy's HTTP client against a scripted server on 127.0.0.1: keep-alive, the bound on
connections, and each way a reply can fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from batch_proxy.errors import BadReply, ConnectionFailed
from batch_proxy.http_client import HttpClient
from tests.harness.servers import free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-Thing: 7\r\n\r\nok"


class Scripted:
    """Answers each request as `mode` says; counts connections and what was asked."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.targets: list[bytes] = []
        self.delay_s = 0.0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.targets.append(head.split(b" ")[1])
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                await asyncio.sleep(self.delay_s)
                if self.mode == "silent":
                    await asyncio.sleep(30)
                reply = {
                    "ok": OK,
                    "close": OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"),
                    "hang up after": OK,
                    "cut": b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
                    "garbage": b"this is not HTTP\r\n\r\n",
                }[self.mode]
                writer.write(reply)
                await writer.drain()
                if self.mode != "ok":
                    return
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted()
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield script, f"http://127.0.0.1:{port}"


async def test_requests_share_a_kept_alive_connection(scripted) -> None:
    script, url = scripted
    client = HttpClient(limit=4)
    for _ in range(3):
        reply = await client.request("POST", url, "/a b/é", body=b"{}", timeout_s=5)
        assert (reply.status, reply.body, reply.headers["x-thing"]) == (200, b"ok", "7")
    await client.close()
    assert script.connections == 1
    assert script.targets == [b"/a%20b/%C3%A9"] * 3  # as the server will decode it


async def test_no_more_connections_than_the_limit(scripted) -> None:
    script, url = scripted
    script.delay_s = 0.05
    client = HttpClient(limit=2)
    replies = await asyncio.gather(
        *(client.request("GET", url, "/", timeout_s=5) for _ in range(6))
    )
    await client.close()
    assert [r.status for r in replies] == [200] * 6
    assert script.most_open == 2


@pytest.mark.parametrize("mode", ["close", "hang up after"])
async def test_a_connection_the_server_closes_is_not_reused(scripted, mode: str) -> None:
    script, url = scripted
    script.mode = mode
    client = HttpClient(limit=1)
    for _ in range(3):
        assert (await client.request("GET", url, "/", timeout_s=5)).status == 200
        await asyncio.sleep(0.05)  # the server's close reaches the client
    await client.close()
    assert script.connections == 3


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("cut", ConnectionFailed, "closed before a whole reply"),
        ("garbage", BadReply, "not HTTP"),
    ],
)
async def test_a_broken_reply_is_an_error_and_the_next_request_works(
    scripted, mode: str, error: type[Exception], words: str
) -> None:
    script, url = scripted
    script.mode = mode
    client = HttpClient(limit=1)
    with pytest.raises(error, match=words):
        await client.request("POST", url, "/", body=b"x", timeout_s=5)
    script.mode = "ok"
    assert (await client.request("POST", url, "/", body=b"x", timeout_s=5)).status == 200
    await client.close()


async def test_a_silent_server_times_out_and_its_connection_is_dropped(scripted) -> None:
    script, url = scripted
    script.mode = "silent"
    client = HttpClient(limit=1)
    with pytest.raises(TimeoutError):
        await client.request("GET", url, "/", timeout_s=0.2)
    script.mode = "ok"
    assert (await client.request("GET", url, "/", timeout_s=5)).status == 200
    await client.close()
    assert script.connections == 2  # the late reply can't be mistaken for this one's


async def test_nothing_listening_is_a_connection_failure() -> None:
    client = HttpClient(limit=1)
    with pytest.raises(ConnectionFailed):
        await client.request("GET", f"http://127.0.0.1:{free_port()}", "/", timeout_s=5)
    with pytest.raises(ConnectionFailed):  # the failed connect gave its place back
        await client.request("GET", f"http://127.0.0.1:{free_port()}", "/", timeout_s=5)
    await client.close()
