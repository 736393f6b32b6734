"""Upstream model servers: lanes for the batching policy, health checks and one HTTP client.

Upstreams are checked with `GET /health` in the background; a connection
failure takes one out at once, and a passing check brings it back. Each check
also reads how many batches the upstream runs at once (the wire's concurrency
header, unless configured) and times the round trip, which the adaptive
policy uses to send the next batch just ahead of the running one's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from batch_proxy import wire
from batch_proxy.batcher import RejectedError, UpstreamError
from batch_proxy.policies import Lane
from batch_proxy.wire import BatchReply

logger = logging.getLogger("nexus.proxy")

_JSON = {"content-type": wire.CONTENT_TYPE}


@dataclass
class Upstream:
    url: str
    outstanding: int = 0
    healthy: bool = True
    last_error: str = ""
    concurrency: int = 1
    rtt_s: float = 0.0

    def lane(self) -> Lane:
        return Lane(self.url, self.concurrency, self.outstanding, self.rtt_s)


class UpstreamSlot:
    """A reserved in-flight batch on one upstream (the batcher's `Slot`)."""

    __slots__ = ("_pool", "_released", "upstream")

    def __init__(self, pool: UpstreamPool, upstream: Upstream) -> None:
        self._pool = pool
        self.upstream = upstream
        self._released = False

    async def send(self, payloads: Sequence[bytes], path: str = wire.BATCH_PATH) -> BatchReply:
        return await self._pool.post_batch(self.upstream, payloads, path)

    async def exchange(
        self, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[bytes, Mapping[str, str]]:
        return await self._pool.post(self.upstream, path, body, headers)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self.upstream)


class UpstreamPool:
    """The batcher's `LanePool` over real HTTP upstreams."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float,
        health_interval_s: float,
        pool_size: int,
        concurrency: int | None = None,
        token: str | None = None,
    ) -> None:
        self.upstreams = [Upstream(url.rstrip("/")) for url in urls]
        self._token = token
        self._by_url = {u.url: u for u in self.upstreams}
        self._configured_concurrency = concurrency
        if concurrency is not None:
            for upstream in self.upstreams:
                upstream.concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._health_timeout = aiohttp.ClientTimeout(total=min(2.0, health_interval_s * 2))
        self._health_interval_s = health_interval_s
        self._pool_size = pool_size
        self._listeners: list[Callable[[], None]] = []
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

    # -- the batcher's LanePool ------------------------------------------------

    def lanes(self) -> list[Lane]:
        return [u.lane() for u in self.upstreams if u.healthy]

    def reserve(self, lane: Lane) -> UpstreamSlot:
        upstream = self._by_url[lane.key]
        upstream.outstanding += 1
        return UpstreamSlot(self, upstream)

    def unavailable(self) -> str:
        reasons = "; ".join(f"{u.url}: {u.last_error}" for u in self.upstreams)
        return f"no healthy upstream ({reasons})."

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def release(self, upstream: Upstream) -> None:
        upstream.outstanding -= 1
        if len(self._listeners) > 1:
            self._changed()  # a slot freed: another queue (v2 shapes) may be waiting for it

    async def post_batch(
        self, upstream: Upstream, payloads: Sequence[bytes], path: str = wire.BATCH_PATH
    ) -> BatchReply:
        body = wire.encode_request(payloads)
        data, _ = await self.post(upstream, path, body, _JSON)
        return _parse_reply(upstream.url, data)

    async def post(
        self, upstream: Upstream, path: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[bytes, Mapping[str, str]]:
        """POST to one upstream (with the upstream token): a 200's body and headers. A 4xx
        is the callers' (RejectedError, its status); anything else the upstream's (502)."""
        assert self._session is not None, "UpstreamPool.start() was not awaited"
        url = upstream.url + path
        if self._token is not None:
            headers = {**headers, "authorization": f"Bearer {self._token}"}
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=self._timeout
            ) as response:
                data = await response.read()
                status = response.status
                reply_headers = response.headers
        except aiohttp.ClientConnectionError as exc:
            self._mark(upstream, healthy=False, error=f"cannot connect ({exc})")
            raise UpstreamError(f"cannot reach the upstream {upstream.url}: {exc}.") from exc
        except TimeoutError as exc:
            raise UpstreamError(
                f"the upstream {upstream.url} did not answer within {self._timeout.total:.0f} s."
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the upstream {upstream.url} failed: {exc}.") from exc
        if 400 <= status < 500 and not path.endswith(wire.BATCH_PATH):
            raise RejectedError(status, _snippet(data))
        if status != wire.OK:
            raise UpstreamError(f"the upstream {upstream.url} answered {status}: {_snippet(data)}.")
        return data, reply_headers

    async def get(self, path: str) -> tuple[int, bytes]:
        """A GET asked of the first healthy upstream (model metadata, readiness): its status
        and body, or a 502 saying why none answered."""
        assert self._session is not None, "UpstreamPool.start() was not awaited"
        healthy = [u for u in self.upstreams if u.healthy]
        if not healthy:
            return 502, orjson.dumps({"error": self.unavailable()})
        upstream = healthy[0]
        headers = {"authorization": f"Bearer {self._token}"} if self._token else None
        try:
            async with self._session.get(
                upstream.url + path, headers=headers, timeout=self._health_timeout
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"the upstream {upstream.url} did not answer {path}: {exc}."
            return 502, orjson.dumps({"error": error})

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(u) for u in self.upstreams))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            await self.check_all()

    async def _check(self, upstream: Upstream) -> None:
        assert self._session is not None
        started = time.perf_counter()
        concurrency = upstream.concurrency
        try:
            async with self._session.get(
                upstream.url + wire.HEALTH_PATH, timeout=self._health_timeout
            ) as response:
                await response.read()
                ok, error = response.status == 200, f"/health answered {response.status}"
                concurrency = wire.concurrency_of(response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, error = False, f"/health failed ({type(exc).__name__}: {exc})"
        if ok:
            rtt = time.perf_counter() - started
            upstream.rtt_s = rtt if upstream.rtt_s == 0.0 else 0.8 * upstream.rtt_s + 0.2 * rtt
            if self._configured_concurrency is None and concurrency != upstream.concurrency:
                upstream.concurrency = concurrency
                self._changed()
        self._mark(upstream, healthy=ok, error="" if ok else error)

    def _mark(self, upstream: Upstream, *, healthy: bool, error: str) -> None:
        if upstream.healthy != healthy:
            state = "back in" if healthy else "taken out"
            logger.warning("upstream %s %s%s", upstream.url, state, f": {error}" if error else "")
            upstream.healthy = healthy
            self._changed()
        upstream.last_error = error

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()


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
