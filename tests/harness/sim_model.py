"""A simulated model server: POST /predict/batch takes a set time per batch.

By default one batch at a time (like one GPU) and 20 ms whatever its size, so
the ideal throughput with batches of 32 is 32 / 0.020 = 1,600 items/s. A batch
of n takes `latency_ms + n * per_item_ms`; `concurrency` batches run at once
(and /health says so in the wire's concurrency header). Used by the batching
benchmark and, with its control endpoint, by the proxy's tests.

    python -m tests.harness.sim_model --port 8000 --latency-ms 20
        [--per-item-ms 0.5] [--concurrency 2]

Each output echoes its input: {"echo": item}. An input {"bad": ...} fails (the
wire's `errors`); an input {"as_output": X} is answered with X itself, so a
test can send a real output that looks like an error object.
POST /_control {"mode": ..., "latency_ms": ..., "healthy": ..., "ready": ..., "record_inputs": ...}
changes behaviour
(mode: ok | http500 | malformed | short);
GET /_batches lists the batches seen (size, time, inputs).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from nexus_common import wire

Message = MutableMapping[str, Any]


class SimModel:
    def __init__(
        self, latency_ms: float = 20.0, per_item_ms: float = 0.0, concurrency: int = 1
    ) -> None:
        self.latency_s = latency_ms / 1000
        self.per_item_s = per_item_ms / 1000
        self.concurrency = concurrency
        self.mode = "ok"
        self.healthy = True
        self.ready = True  # GET /ready: 200 when healthy and ready (a model loaded)
        self.batches: list[dict[str, Any]] = []
        self.record_inputs = True
        self._free_at = [0.0] * concurrency  # when each simulated device slot is next free

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path == wire.BATCH_PATH:
            status, payload = await self._predict(body)
        elif path.startswith("/models/") and path.endswith(wire.BATCH_PATH):  # a named model
            status, payload = await self._predict(body, path.split("/")[2])
        elif path == wire.HEALTH_PATH:
            status, payload = (200, {"status": "ok"}) if self.healthy else (503, {"error": "down"})
        elif path == wire.READY_PATH:
            up = self.healthy and self.ready
            status, payload = (200, {"status": "ready"}) if up else (503, {"error": "loading"})
        elif path == "/_control":
            status, payload = 200, self._control(orjson.loads(body))
        elif path == "/_batches":
            status, payload = 200, {"batches": self.batches}
        else:
            status, payload = 404, {"error": "no route"}
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        headers = [(b"content-type", b"application/json")]
        if path == wire.HEALTH_PATH:
            headers.append((wire.CONCURRENCY_HEADER.encode(), str(self.concurrency).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _control(self, change: dict[str, Any]) -> dict[str, Any]:
        if "latency_ms" in change:
            self.latency_s = change["latency_ms"] / 1000
        self.mode = change.get("mode", self.mode)
        self.healthy = change.get("healthy", self.healthy)
        self.ready = change.get("ready", self.ready)
        self.record_inputs = change.get("record_inputs", self.record_inputs)
        if change.get("reset"):
            self.batches.clear()
        return {"mode": self.mode, "latency_ms": self.latency_s * 1000, "healthy": self.healthy}

    async def _predict(self, body: bytes, model_name: str | None = None) -> tuple[int, Any]:
        inputs = orjson.loads(body)["inputs"]
        arrived = time.monotonic()
        # The device's own timeline: a batch starts when it has arrived and a slot is free,
        # so the server's work between batches does not slow the simulated device down.
        slot = min(range(self.concurrency), key=self._free_at.__getitem__)
        start = max(time.perf_counter(), self._free_at[slot])
        end = self._free_at[slot] = start + self.latency_s + self.per_item_s * len(inputs)
        await _sleep_until(end)
        self.batches.append(
            {
                "size": len(inputs),
                "arrived": arrived,
                "started": start,  # on the simulated device (perf_counter, monotonic here)
                "ended": end,
                "model": model_name,
                "inputs": inputs if self.record_inputs else None,
            }
        )
        if self.mode == "http500":
            return 500, {"error": "simulated failure"}
        if self.mode == "malformed":
            return 200, b"this is not json"
        outputs = [
            x["as_output"] if isinstance(x, dict) and "as_output" in x else {"echo": x}
            for x in inputs
        ]
        errors = {i: "bad item" for i, x in enumerate(inputs) if isinstance(x, dict) and "bad" in x}
        if self.mode == "short":
            outputs = outputs[:-1]
            errors = {i: e for i, e in errors.items() if i < len(outputs)}
        model = {"name": "sim", "commit_hash": "0" * 40}
        return 200, wire.reply_body(outputs, errors, model)


async def _sleep_until(end: float) -> None:
    """Wake at `end` (perf_counter), to a tenth of a millisecond: the event loop's timers
    move in whole milliseconds, so the last 1.5 ms is slept blocking, as a model busy
    computing would hold its thread."""
    if end - time.perf_counter() > 0.002:
        await asyncio.sleep(end - time.perf_counter() - 0.0015)
    remaining = end - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="simulated batch model server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="per batch")
    parser.add_argument("--per-item-ms", type=float, default=0.0, help="added per item")
    parser.add_argument("--concurrency", type=int, default=1, help="batches run at once")
    args = parser.parse_args()
    model = SimModel(args.latency_ms, args.per_item_ms, args.concurrency)
    model.record_inputs = False
    uvicorn.run(
        model,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
