"""Upstream model servers: a pool with in-flight slots, health checks and one HTTP client.

Each batch goes to the healthy upstream with the fewest outstanding batches.
Upstreams are checked with `GET /health` in the background; a connection
failure takes one out at once, and a passing check brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from batch_proxy import wire
from batch_proxy.batcher import NoUpstreamError, UpstreamError
from batch_proxy.wire import BatchReply

logger = logging.getLogger("nexus.proxy")

_JSON = {"content-type": wire.CONTENT_TYPE}


@dataclass
class Upstream:
    url: str
    outstanding: int = 0
    healthy: bool = True
    last_error: str = ""


class UpstreamSlot:
    """A reserved in-flight batch on one upstream (the batcher's `Slot`)."""

    __slots__ = ("_pool", "_released", "upstream")

    def __init__(self, pool: UpstreamPool, upstream: Upstream) -> None:
        self._pool = pool
        self.upstream = upstream
        self._released = False

    async def send(self, payloads: Sequence[bytes]) -> BatchReply:
        return await self._pool.post_batch(self.upstream, payloads)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self.upstream)


class UpstreamPool:
    """The batcher's `SlotPool` over real HTTP upstreams."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_inflight: int,
        timeout_s: float,
        health_interval_s: float,
        pool_size: int,
    ) -> None:
        self.upstreams = [Upstream(url.rstrip("/")) for url in urls]
        self.max_inflight = max_inflight
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._health_timeout = aiohttp.ClientTimeout(total=min(2.0, health_interval_s * 2))
        self._health_interval_s = health_interval_s
        self._pool_size = pool_size
        self._freed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
        self._session = aiohttp.ClientSession(connector=connector)
        await self.check_all()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._session is not None:
            await self._session.close()

    @property
    def ready(self) -> bool:
        return any(u.healthy for u in self.upstreams)

    @property
    def outstanding(self) -> int:
        return sum(u.outstanding for u in self.upstreams)

    async def acquire(self) -> UpstreamSlot:
        """Called by the batcher's one loop only, so one Event is enough to wait on."""
        while True:
            healthy = [u for u in self.upstreams if u.healthy]
            if not healthy:
                reasons = "; ".join(f"{u.url}: {u.last_error}" for u in self.upstreams)
                raise NoUpstreamError(f"no healthy upstream ({reasons}).")
            free = [u for u in healthy if u.outstanding < self.max_inflight]
            if free:
                chosen = min(free, key=lambda u: u.outstanding)
                chosen.outstanding += 1
                return UpstreamSlot(self, chosen)
            self._freed.clear()
            await self._freed.wait()

    def release(self, upstream: Upstream) -> None:
        upstream.outstanding -= 1
        self._freed.set()

    async def post_batch(self, upstream: Upstream, payloads: Sequence[bytes]) -> BatchReply:
        assert self._session is not None, "UpstreamPool.start() was not awaited"
        body = wire.encode_request(payloads)
        url = upstream.url + wire.BATCH_PATH
        try:
            async with self._session.post(
                url, data=body, headers=_JSON, timeout=self._timeout
            ) as response:
                data = await response.read()
                status = response.status
        except aiohttp.ClientConnectionError as exc:
            self._mark(upstream, healthy=False, error=f"cannot connect ({exc})")
            raise UpstreamError(f"cannot reach the upstream {upstream.url}: {exc}.") from exc
        except TimeoutError as exc:
            raise UpstreamError(
                f"the upstream {upstream.url} did not answer within {self._timeout.total:.0f} s."
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the upstream {upstream.url} failed: {exc}.") from exc
        if status != wire.OK:
            raise UpstreamError(f"the upstream {upstream.url} answered {status}: {_snippet(data)}.")
        return _parse_reply(upstream.url, data)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(u) for u in self.upstreams))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            await self.check_all()

    async def _check(self, upstream: Upstream) -> None:
        assert self._session is not None
        try:
            async with self._session.get(
                upstream.url + wire.HEALTH_PATH, timeout=self._health_timeout
            ) as response:
                await response.read()
                ok, error = response.status == 200, f"/health answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, error = False, f"/health failed ({type(exc).__name__}: {exc})"
        self._mark(upstream, healthy=ok, error="" if ok else error)

    def _mark(self, upstream: Upstream, *, healthy: bool, error: str) -> None:
        if upstream.healthy != healthy:
            state = "back in" if healthy else "taken out"
            logger.warning("upstream %s %s%s", upstream.url, state, f": {error}" if error else "")
        upstream.healthy = healthy
        upstream.last_error = error
        self._freed.set()


def _parse_reply(url: str, data: bytes) -> BatchReply:
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"the upstream {url} sent a reply that is not JSON.") from None
    try:
        return wire.check_reply(reply)
    except wire.WireError as exc:
        raise UpstreamError(f"the upstream {url} sent {exc.message}.") from None


def _snippet(data: bytes, limit: int = 200) -> str:
    text = data[:limit].decode("utf-8", "replace").strip()
    try:
        parsed = orjson.loads(data)
        if isinstance(parsed, dict) and "error" in parsed:
            text = str(parsed["error"])[:limit]
    except orjson.JSONDecodeError:
        pass
    return text or "(empty body)"
