"""`POST /predict` answered inside the HTTP protocol: no ASGI task, one write per answer.

Why: from 8 to 32 closed-loop callers every caller is in every batch already, and the
model idles only while the callers come back through the proxy (bench/proxy_batching.py's
device-busy column). The proxy's CPU per request is most of that return trip, and most
of that CPU was uvicorn's ASGI cycle around a request: a task, receive/send coroutines,
an `asyncio.timeout`, a disconnect watcher, headers and body in two writes. Here the
protocol takes the request's body as httptools hands it over, queues the item, and the
item's future writes the answer from its done callback.

Everything else the proxy serves (v2, probes, /metrics, a request that expects a
100-continue) goes to the ASGI app as before; both ways share the app's checks
(`ProxyApp.admit`, `predict_head`, `predict_submit`) and its answers (`Refusal`). What
uvicorn gives a connection still holds: keep-alive and its timeout, pipelined requests
answered in order (its pipeline queue starts the next request only once this one is
answered), the read deadline (slow_clients), a graceful shutdown that waits for the
answer of a request already read, and the flow control of reading.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    RequestResponseCycle,
)

from batch_proxy.answers import (
    Refusal,
    answered,
    refusal_of,
    response_headers,
    timed_out,
    too_large,
)
from batch_proxy.app import ProxyApp, model_of
from batch_proxy.batcher import Pending
from batch_proxy.errors import BatchError
from nexus_common.slow_clients import GuardedProtocol, guarded_protocol

logger = logging.getLogger("nexus.proxy")

_UNSET: Any = object()  # a model name nobody has: "not a prediction"


class _Call:
    """One prediction being answered on a connection: its request cycle (uvicorn's, so
    the pipeline, keep-alive and shutdown see it as any other), its item once queued."""

    __slots__ = ("cycle", "item", "model", "priority", "timer")

    def __init__(self, cycle: RequestResponseCycle, model: str | None) -> None:
        self.cycle = cycle
        self.model = model
        self.priority = 0
        self.item: Pending | None = None
        self.timer: asyncio.TimerHandle | None = None


class FastPredictProtocol(GuardedProtocol):
    """slow_clients' guarded protocol with predictions answered in it. Built on uvicorn's
    httptools protocol below its public interface (`_start_asgi_task`, the cycle's body,
    the pipeline): uvicorn is pinned to the tested range in pyproject.toml, and
    tests/batch_proxy/test_fast_predict.py names each internal this class relies on."""

    _call: _Call | None = None  # the prediction now started on this connection

    def __init__(self, *args: Any, proxy: ProxyApp, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proxy = proxy
        self.limit = proxy.settings.max_body_bytes

    def _start_asgi_task(self, cycle: RequestResponseCycle, asgi_app: Any) -> None:
        model = _prediction_of(cycle)
        if model is _UNSET:
            super()._start_asgi_task(cycle, asgi_app)
            return
        call = self._call = _Call(cycle, model)
        self.proxy.requests += 1
        try:
            self._start(call)
        except Exception as exc:
            self._failed(call, exc)

    def _start(self, call: _Call) -> None:
        cycle = call.cycle
        headers = cycle.scope["headers"]
        if self.proxy.admission is not None:
            refusal = self.proxy.admit(headers)
            if refusal is not None:
                self._answer(call, refusal)
                return
        priority = self.proxy.predict_head(call.model, headers)
        if isinstance(priority, Refusal):
            self._answer(call, priority)
            return
        call.priority = priority
        if len(cycle.body) > self.limit:
            self._too_large(call)
        elif not cycle.more_body:
            self._submit(call)
        # else: on_message_complete submits it

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        call = self._call
        if call is None or call.cycle is not self.cycle or call.item is not None:
            return
        if len(call.cycle.body) > self.limit and not call.cycle.response_complete:
            self._too_large(call)
        else:
            # uvicorn stops reading past 64 KiB until an app's receive() asks for more; here
            # no app receives (the body is taken whole, up to the limit), so read on.
            self.flow.resume_reading()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        call = self._call
        if (
            call is not None
            and call.cycle is self.cycle
            and call.item is None
            and not call.cycle.response_complete
        ):
            try:
                self._submit(call)
            except Exception as exc:
                self._failed(call, exc)

    def on_response_complete(self) -> None:
        if self.pipeline:
            # The next pipelined request starts on the loop's next turn, not inside this
            # answer: one answered at once would otherwise start the next from within
            # itself, and a long pipeline of them would recurse as deep as it is long.
            self.loop.call_soon(super().on_response_complete)
        else:
            super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        call = self._call
        super().connection_lost(exc)
        if call is not None and not call.cycle.response_complete:
            call.cycle.disconnected = True  # the batcher's hang-up check sees it
            if call.item is not None:
                call.item.future.cancel()  # out of the queue: never sent

    def _submit(self, call: _Call) -> None:
        body = bytes(call.cycle.body)
        call.cycle.body.clear()
        item = self.proxy.predict_submit(call.model, call.priority, body, call.cycle)
        if isinstance(item, Refusal):
            self._answer(call, item)
            return
        call.item = item
        call.timer = self.loop.call_later(item.deadline - item.enqueued, self._expire, call)
        item.future.add_done_callback(lambda future: self._settled(call, future))

    def _too_large(self, call: _Call) -> None:
        self._answer(call, too_large(self.limit))

    def _expire(self, call: _Call) -> None:
        call.timer = None
        item = call.item
        if item is not None and not item.future.done():
            item.future.cancel()  # taken out of its batch-to-be
            self._answer(call, timed_out(item.deadline - item.enqueued))

    def _settled(self, call: _Call, future: asyncio.Future[tuple[Any, Any]]) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.cycle.response_complete or future.cancelled():
            return  # answered already (timed out), or the client left
        try:
            output, model = future.result()
        except BatchError as exc:
            self._answer(call, refusal_of(exc))
            return
        except Exception as exc:
            self._failed(call, exc)
            return
        self._write(call, 200, orjson.dumps(answered(output, model)))

    def _failed(self, call: _Call, exc: Exception) -> None:
        """A bug, not the caller's: logged, and answered with one sentence (as uvicorn
        answers an ASGI app that raised), never a dropped connection."""
        logger.error("a prediction failed", exc_info=exc)
        self._answer(call, Refusal(500, {"error": f"the proxy failed: {exc}."}))

    def _answer(self, call: _Call, refusal: Refusal) -> None:
        body = orjson.dumps(refusal.payload)
        self._write(call, refusal.status, body, refusal.retry_after)

    def _write(
        self, call: _Call, status: int, body: bytes, retry_after: bool | float = False
    ) -> None:
        """The whole answer in one write, then uvicorn's end of a response: the
        connection closed (no keep-alive) or the next pipelined request started."""
        cycle = call.cycle
        if cycle.response_complete:
            return
        if self._call is call:
            self._call = None
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if cycle.disconnected or self.transport.is_closing():
            return  # the client left: nothing to write, nothing counted
        parts = [STATUS_LINE[status]]
        for name, value in (
            *self.server_state.default_headers,
            *response_headers(status, body, retry_after),
        ):
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        self.proxy.metrics.request_done(status)
        if not cycle.keep_alive:
            self.transport.close()
        if self.flow.write_paused:  # a client not reading: read no more of it until
            self.flow.pause_reading()  # it has taken its answers (shutdown waits too)
            task = self.loop.create_task(self._after_drain(cycle))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            cycle.on_response()

    async def _after_drain(self, cycle: RequestResponseCycle) -> None:
        await self.flow.drain()
        cycle.on_response()


def fast_protocol(app: ProxyApp, read_timeout_s: float) -> type[asyncio.Protocol]:
    """The proxy's HTTP protocol, for `uvicorn.Config(http=...)`."""
    return guarded_protocol(read_timeout_s, FastPredictProtocol, proxy=app)


def _prediction_of(cycle: RequestResponseCycle) -> Any:
    """The model a request predicts with (None: the default), or _UNSET: not one the
    fast path takes."""
    scope = cycle.scope
    if scope["method"] != "POST" or cycle.waiting_for_100_continue:
        return _UNSET
    path = scope["path"]
    if path == "/predict":
        return None
    model = model_of(path)
    return _UNSET if model is None else model
