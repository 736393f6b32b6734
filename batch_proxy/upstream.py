"""Upstream model servers: lanes for the batching policy, health checks and one HTTP client.

Upstreams are checked with `GET /health` in the background (over http_client, as
batches are); a connection failure takes one out at once, and a passing check brings
it back. Upstreams may join and leave while the proxy runs (found in DNS:
`discovery.py`); one that leaves is drained: no new batch, and it is forgotten once
its last in-flight batch has answered. Each check
also reads how many batches the upstream runs at once (the wire's concurrency
header, unless configured) and times the round trip, which the adaptive
policy uses to send the next batch just ahead of the running one's end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from batch_proxy.errors import (
    ClientError,
    ConnectionFailed,
    RejectedError,
    UpstreamError,
    UpstreamNotReadyError,
)
from batch_proxy.http_client import HttpClient
from batch_proxy.policies import Lane
from nexus_common import wire
from nexus_common.wire import BatchReply

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
    draining: bool = False

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
        self.upstreams: list[Upstream] = []
        self._by_url: dict[str, Upstream] = {}
        self._token = token
        self._configured_concurrency = concurrency
        for url in urls:
            self._join(url)
        self._timeout_s = timeout_s
        self._health_timeout_s = min(2.0, health_interval_s * 2)
        self._health_interval_s = health_interval_s
        self._pool_size = pool_size
        self._listeners: list[Callable[[], None]] = []
        self._client: HttpClient | None = None
        self.empty_reason = "no upstream is configured"

    async def start(self) -> None:
        """Open the client and check every upstream once; the owner then runs
        `watch_health` in the background (under its supervisor)."""
        self._client = HttpClient(limit=self._pool_size)
        await self.check_all()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def ready(self) -> bool:
        return any(u.healthy and not u.draining for u in self.upstreams)

    @property
    def ready_count(self) -> int:
        return sum(1 for u in self.upstreams if u.healthy and not u.draining)

    @property
    def urls(self) -> set[str]:
        """The upstreams taking new batches or waiting to (healthy or not), draining ones not."""
        return {u.url for u in self.upstreams if not u.draining}

    # -- joining and leaving -----------------------------------------------------

    async def add(self, url: str) -> bool:
        """Join `url` once its `/ready` answers 200 (a replica still loading gets no batch);
        one being drained is simply taken back. True if it is in the pool now."""
        known = self._by_url.get(url)
        if known is not None:
            if known.draining:
                known.draining = False
                logger.warning("upstream %s is back: no longer draining", url)
                self._changed()
            return True
        if not await self._answers_ready(url):
            return False
        upstream = self._join(url)
        await self._check(upstream)
        logger.warning("upstream %s joined (%d now)", url, len(self.urls))
        self._changed()
        return True

    def drain(self, url: str) -> None:
        """No new batch for `url`; it leaves when its in-flight batches have answered."""
        upstream = self._by_url.get(url)
        if upstream is None or upstream.draining:
            return
        upstream.draining = True
        logger.warning("upstream %s is draining (%d batches in flight)", url, upstream.outstanding)
        self._leave_if_drained(upstream)
        self._changed()

    def _join(self, url: str) -> Upstream:
        upstream = Upstream(url.rstrip("/"))
        if self._configured_concurrency is not None:
            upstream.concurrency = self._configured_concurrency
        self.upstreams.append(upstream)
        self._by_url[upstream.url] = upstream
        return upstream

    def _leave_if_drained(self, upstream: Upstream) -> None:
        if upstream.draining and upstream.outstanding == 0:
            self.upstreams.remove(upstream)
            del self._by_url[upstream.url]
            logger.warning("upstream %s drained and removed", upstream.url)

    async def _answers_ready(self, url: str) -> bool:
        try:
            reply = await self._http.request(
                "GET", url, wire.READY_PATH, timeout_s=self._health_timeout_s
            )
        except (ClientError, TimeoutError):
            return False
        return reply.status == 200

    @property
    def _http(self) -> HttpClient:
        assert self._client is not None, "UpstreamPool.start() was not awaited"
        return self._client

    @property
    def outstanding(self) -> int:
        return sum(u.outstanding for u in self.upstreams)

    # -- the batcher's LanePool ------------------------------------------------

    def lanes(self) -> list[Lane]:
        return [u.lane() for u in self.upstreams if u.healthy and not u.draining]

    def reserve(self, lane: Lane) -> UpstreamSlot:
        upstream = self._by_url[lane.key]
        upstream.outstanding += 1
        return UpstreamSlot(self, upstream)

    def unavailable(self) -> str:
        serving = [u for u in self.upstreams if not u.draining]
        if not serving:
            return f"no healthy upstream ({self.empty_reason})."
        reasons = "; ".join(f"{u.url}: {u.last_error}" for u in serving)
        return f"no healthy upstream ({reasons})."

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def release(self, upstream: Upstream) -> None:
        upstream.outstanding -= 1
        if upstream.draining:
            self._leave_if_drained(upstream)
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
        is the callers' (RejectedError, its status), as is a 404 for a named model's batch;
        anything else the upstream's (502)."""
        if self._token is not None:
            headers = {**headers, "authorization": f"Bearer {self._token}"}
        try:
            reply = await self._http.request(
                "POST", upstream.url, path, body=body, headers=headers, timeout_s=self._timeout_s
            )
        except ConnectionFailed as exc:
            self._mark(upstream, healthy=False, error=f"cannot connect ({exc})")
            raise UpstreamError(f"cannot reach the upstream {upstream.url}: {exc}.") from exc
        except TimeoutError as exc:
            raise UpstreamError(
                f"the upstream {upstream.url} did not answer within {self._timeout_s:g} s."
            ) from exc
        except ClientError as exc:
            raise UpstreamError(f"the upstream {upstream.url} failed: {exc}.") from exc
        data, status, reply_headers = reply.body, reply.status, reply.headers
        if 400 <= status < 500 and not path.endswith(wire.BATCH_PATH):
            raise RejectedError(status, _snippet(data))
        if status == 404 and path.startswith("/models/"):
            # A shared upstream asked for a model it does not serve: the caller named it.
            raise RejectedError(
                404, f"the upstream {upstream.url} has no such model: {_snippet(data)}"
            )
        if status == wire.NOT_READY:
            raise UpstreamNotReadyError(
                f"the upstream {upstream.url} is not ready: {_snippet(data)}."
            )
        if status != wire.OK:
            raise UpstreamError(f"the upstream {upstream.url} answered {status}: {_snippet(data)}.")
        return data, reply_headers

    async def get(self, path: str) -> tuple[int, bytes]:
        """A GET asked of the first healthy upstream (model metadata, readiness): its status
        and body, or a 502 saying why none answered."""
        healthy = [u for u in self.upstreams if u.healthy and not u.draining]
        if not healthy:
            return 502, orjson.dumps({"error": self.unavailable()})
        upstream = healthy[0]
        headers = {"authorization": f"Bearer {self._token}"} if self._token else None
        try:
            reply = await self._http.request(
                "GET", upstream.url, path, headers=headers, timeout_s=self._health_timeout_s
            )
        except (ClientError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {self._health_timeout_s:g} s"
            error = f"the upstream {upstream.url} did not answer {path}: {why}."
            return 502, orjson.dumps({"error": error})
        return reply.status, reply.body

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(u) for u in self.upstreams if not u.draining))

    async def watch_health(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            await self.check_all()

    async def _check(self, upstream: Upstream) -> None:
        started = time.perf_counter()
        concurrency = upstream.concurrency
        try:
            reply = await self._http.request(
                "GET", upstream.url, wire.HEALTH_PATH, timeout_s=self._health_timeout_s
            )
            ok, error = reply.status == 200, f"/health answered {reply.status}"
            concurrency = wire.concurrency_of(reply.headers)
        except (ClientError, TimeoutError) as exc:
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
