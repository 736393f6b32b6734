"""A model's worker process: it confines itself, loads one version, and answers batches.

It runs in a child of the zygote (`zygote`), with the channel and the two arenas it was
handed. The first message is its `WorkerSpec`; it answers `ready` (the signature, the
device, the warm-up's time, the confinement's layers) or the load's error, then one reply
per batch until the server closes the channel. A batch the model raises on is answered
with the error (the server names it per item, as in-process); a crash, a hang or a
runaway allocation ends here, and the server sees the channel close.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import orjson

from model_server.errors import ChannelClosedError, ModelLoadError
from model_server.inference import build_predictor, warm_up
from model_server.predictor import OUT_OF_MEMORY, ItemFailure, Predictor, summary
from model_server.tensors import TensorPredictor
from model_server.workers import confine
from model_server.workers.arena import Arena, read_arrays, write_arrays
from model_server.workers.channel import Channel
from model_server.workers.spec import WorkerSpec
from nexus_common.signature import Signature

logger = logging.getLogger("nexus.worker")


def serve(channel_fd: int, inbox_fd: int, outbox_fd: int) -> int:
    """The worker's life; its exit status."""
    channel = Channel(socket.socket(fileno=channel_fd))
    inbox, outbox = Arena(inbox_fd), Arena(outbox_fd)
    spec = WorkerSpec.from_json(channel.receive())
    os.environ.update(spec.env, HOME=spec.tmpdir, TMPDIR=spec.tmpdir)
    tempfile.tempdir = spec.tmpdir
    os.chdir(spec.tmpdir)
    try:
        predictor, ready = _load(spec)
    except Exception as exc:
        if isinstance(exc, ModelLoadError):
            channel.send({"error": exc.message, "hint": exc.hint})
        else:
            channel.send({"error": summary(exc), "hint": None})
        return 1
    channel.send(ready)
    while True:
        try:
            request = channel.receive()
        except ChannelClosedError:
            return 0
        if request.get("op") == "close":
            return 0
        channel.send(_answer(spec, predictor, request, inbox, outbox))


def _load(spec: WorkerSpec) -> tuple[Predictor, dict[str, Any]]:
    layers = confine.apply(spec)
    _threads(spec.threads)
    predictor = build_predictor(
        Path(spec.path),
        fmt=spec.format,
        device=spec.device,
        dtype=spec.dtype,
        handler=spec.handler,
        trust_pickle=spec.trust_pickle,
        signature=None if spec.signature is None else Signature.from_json(spec.signature),
        threads=spec.threads,
        task=spec.task,
        trust_remote_code=spec.trust_remote_code,
    )
    warm_up(predictor, spec.warmup_sizes, spec.label)
    tensors = isinstance(predictor, TensorPredictor)
    signature = predictor.signature if isinstance(predictor, TensorPredictor) else None
    try:
        example = orjson.loads(orjson.dumps(predictor.example_item(), option=_NUMPY))
    except TypeError:
        example = None
    return predictor, {
        "ready": True,
        "pid": os.getpid(),
        "device": predictor.device,
        "kind": "tensors" if tensors else "items",
        "signature": signature.to_json() if signature is not None else None,
        "example": example,
        "warmup_seconds": predictor.warmup_seconds,
        "layers": layers,
    }


def _answer(
    spec: WorkerSpec, predictor: Predictor, message: dict[str, Any], inbox: Arena, outbox: Arena
) -> dict[str, Any]:
    try:
        if message.get("op") == "named":
            assert isinstance(predictor, TensorPredictor)
            inputs = read_arrays(inbox, message.get("inputs"), copy=False, role="input")
            return {"outputs": write_arrays(outbox, predictor.run_named(inputs))}
        inbox.remap()
        items = orjson.loads(inbox.view(0, int(message["size"])))
        answers = predictor.predict(items)
        if any(isinstance(a, ItemFailure) and OUT_OF_MEMORY in a.message for a in answers):
            _said_memory(spec)
        return _items(answers, outbox)
    except MemoryError:
        _said_memory(spec)
        return {"error": OUT_OF_MEMORY}
    except Exception as exc:
        logger.warning("%s: the model failed on a batch: %s", spec.label, summary(exc))
        return {"error": summary(exc)}


def _said_memory(spec: WorkerSpec) -> None:
    limit = f"{spec.memory_bytes / 2**30:.1f} GiB" if spec.memory_bytes else "the machine's"
    logger.warning(
        "%s: the model asked for more memory than its limit (%s): refused", spec.label, limit
    )


def _items(outputs: list[Any], outbox: Arena) -> dict[str, Any]:
    """A handler's outputs as JSON in the outbox; failures and unencodable outputs named."""
    errors = {str(i): o.message for i, o in enumerate(outputs) if isinstance(o, ItemFailure)}
    shown = [None if isinstance(o, ItemFailure) else o for o in outputs]
    try:
        body = orjson.dumps(shown, option=_NUMPY)
    except TypeError:  # find the outputs that cannot be JSON, and say so for each
        for index, output in enumerate(shown):
            try:
                orjson.dumps(output, option=_NUMPY)
            except TypeError as exc:
                errors[str(index)] = f"cannot encode this output: {exc}"
                shown[index] = None
        body = orjson.dumps(shown, option=_NUMPY)
    outbox.ensure(len(body))
    outbox.view(0, len(body))[:] = body
    return {"size": len(body), "errors": errors}


def _threads(count: int) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, count))


_NUMPY = orjson.OPT_SERIALIZE_NUMPY
