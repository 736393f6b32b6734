"""The server's side of a version that runs in workers: predictors that look like the
in-process ones to the service, and the function that starts a version's workers.

Decoding, grouping and naming stay in the server (`TensorPredictor.predict`); only the
forward pass crosses to a worker, its inputs stacked straight into the worker's inbox.
A handler without a signature gets its JSON items as JSON, and answers the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from control_plane import ModelEntry
from control_plane.core.hardware import machine_memory
from model_server.errors import ModelRunError, WorkerProtocolError
from model_server.predictor import ItemFailure, Predictor, error_output
from model_server.settings import ServerSettings
from model_server.tensors import TensorPredictor
from model_server.workers.arena import read_arrays, stack_into, write_arrays
from model_server.workers.pool import Worker, WorkerPool
from model_server.workers.spec import WorkerSpec
from nexus_common.signature import Signature

logger = logging.getLogger("nexus.model_server")


def start_workers(
    settings: ServerSettings,
    entry: ModelEntry,
    path: str,
    device: str,
    on_failing: Callable[[str], None] | None,
) -> Predictor:
    """Start `settings.instances` workers of `entry` (loaded, warmed, confined); the
    predictor the service uses for it. Blocking: run it in a thread."""
    instances = settings.instances
    spec = WorkerSpec(
        label=entry.label,
        path=path,
        format=entry.format,
        device=device,
        dtype=settings.dtype,
        handler=settings.handler,
        trust_pickle=settings.trust_pickle,
        trust_remote_code=settings.trust_remote_code,
        task=entry.task,
        signature=entry.tensors,
        warmup_sizes=tuple(sorted({1, settings.warmup_batch})),
        threads=max(1, (os.cpu_count() or 1) // instances),
        confine=settings.confine == "on",
        memory_bytes=settings.worker_memory_bytes or machine_memory(),
        env=_passed(settings.worker_env),
    )
    pool = WorkerPool(
        spec,
        instances,
        batch_timeout_s=settings.batch_timeout_s,
        load_timeout_s=settings.load_timeout_s,
        on_failing=on_failing,
    )
    ready = pool.start()
    layers = ", ".join(ready.get("layers", []))
    workers = f"{instances} worker{'' if instances == 1 else 's'} (pids {pool.pids})"
    if spec.confine:
        logger.info("%s runs in %s, confined by: %s", entry.label, workers, layers)
    else:
        logger.warning(
            "%s runs in %s NOT confined (--confine off): its code can reach the network and "
            "any file this user can; only %s",
            entry.label,
            workers,
            layers,
        )
    if ready.get("kind") == "tensors":
        return RemoteTensorPredictor(pool, ready)
    return RemoteItemsPredictor(pool, ready)


class InWorkers(Predictor):
    """What a version in workers tells about itself, from its workers' `ready` message."""

    def __init__(self, pool: WorkerPool, ready: dict[str, Any]) -> None:
        self.pool = pool
        self.device = str(ready.get("device", "cpu"))
        self.warmup_seconds = float(ready.get("warmup_seconds", 0.0))
        self._ready = ready

    def example_item(self) -> Any:
        return self._ready.get("example")

    def runtime(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "process": "workers",
            "instances": pool.instances,
            "pids": pool.pids,
            "confinement": self._ready.get("layers", []) if pool.spec.confine else [],
            "failing": pool.failing,
        }

    def close(self) -> None:
        self.pool.retire()


class RemoteTensorPredictor(InWorkers, TensorPredictor):
    """A tensor model in workers: the server decodes and groups, a worker runs."""

    def __init__(self, pool: WorkerPool, ready: dict[str, Any]) -> None:
        super().__init__(pool, ready)
        raw = ready.get("signature")
        self.signature = None if raw is None else Signature.from_json(raw, "the worker")

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.pool.run(
            lambda worker: {"op": "named", "inputs": write_arrays(worker.inbox, inputs)},
            _outputs,
        )

    def run_batch(self, columns: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return self.pool.run(
            lambda worker: {"op": "named", "inputs": stack_into(worker.inbox, columns)},
            _outputs,
        )

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Done: each worker warmed up before it said it was ready."""


class RemoteItemsPredictor(InWorkers):
    """A handler without a signature, in workers: JSON items in, JSON outputs back."""

    def predict(self, items: Sequence[Any]) -> list[Any]:
        def prepare(worker: Worker) -> dict[str, Any]:
            body = orjson.dumps(list(items), option=orjson.OPT_SERIALIZE_NUMPY)
            worker.inbox.ensure(len(body))
            worker.inbox.view(0, len(body))[:] = body
            return {"op": "items", "size": len(body)}

        def finish(worker: Worker, reply: dict[str, Any]) -> list[Any]:
            if "error" in reply:
                failure = error_output(f"the handler failed: {reply['error']}")
                return [failure] * len(items)
            worker.outbox.remap()
            try:
                size = int(reply["size"])
                outputs = orjson.loads(worker.outbox.view(0, min(size, worker.outbox.size)))
            except (KeyError, TypeError, ValueError):
                raise WorkerProtocolError("a malformed reply to a batch of items") from None
            if not isinstance(outputs, list) or len(outputs) != len(items):
                raise WorkerProtocolError("a reply with a different number of items")
            for index, message in dict(reply.get("errors") or {}).items():
                outputs[int(index)] = ItemFailure(str(message))
            return outputs

        return self.pool.run(prepare, finish)


def _outputs(worker: Worker, reply: dict[str, Any]) -> dict[str, np.ndarray]:
    if "error" in reply:
        raise ModelRunError(str(reply["error"]))
    return read_arrays(worker.outbox, reply.get("outputs"), copy=True)


def _passed(names: str | None) -> dict[str, str]:
    wanted = [name.strip() for name in (names or "").split(",") if name.strip()]
    return {name: os.environ[name] for name in wanted if name in os.environ}
