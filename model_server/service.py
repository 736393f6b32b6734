"""The model server's state and what can be done with it, apart from HTTP.

`ModelService` loads a version in the background, predicts batches on one
inference thread (one batch at a time on the device), describes what it
serves, and counts what it does. A version in service is a `LoadedVersion`;
the service holds the one that answers (`serving`), so a rollout can hold a
second one beside it and swap them without touching the routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from batch_proxy import wire
from control_plane import ModelEntry, NexusError, Registry
from model_server.inference import ItemFailure, Predictor, build_predictor, resolve_device
from model_server.loader import fetch_version
from model_server.metrics import ServerMetrics
from model_server.settings import ServerSettings

logger = logging.getLogger("nexus.model_server")

MAX_CONCURRENT_BATCHES = 1  # one inference thread: batches run one at a time


class NotReadyError(NexusError):
    """No version is loaded yet (or loading failed): 503."""


@dataclass(frozen=True)
class LoadedVersion:
    """One version, fetched, verified, loaded and warmed: ready to answer."""

    entry: ModelEntry
    predictor: Predictor
    load_seconds: float

    @property
    def info(self) -> dict[str, Any]:
        """Who answered, as every reply says it."""
        return {
            "name": self.entry.model_name,
            "commit_hash": self.entry.commit_hash,
            "sha256": self.entry.sha256,
        }


@dataclass(frozen=True)
class BatchResult:
    """Outputs in input order, the failed indices with their reasons, and who answered."""

    outputs: list[Any]
    errors: dict[int, str]
    model: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return wire.reply_body(self.outputs, self.errors, self.model)


def load_model(settings: ServerSettings) -> tuple[ModelEntry, Predictor]:
    """Resolve, fetch (verified, cached), load and warm up. Blocking: run it in a thread."""
    registry = Registry(settings.repo)
    artifact = fetch_version(registry, settings.model_ref, settings.model_name, settings.cache_dir)
    device = resolve_device(settings.device)
    predictor = build_predictor(
        artifact.path,
        fmt=artifact.entry.format,
        device=device,
        dtype=settings.dtype,
        handler=settings.handler,
        trust_pickle=settings.trust_pickle,
    )
    predictor.warmup()
    return artifact.entry, predictor


@dataclass
class ModelService:
    settings: ServerSettings
    on_fatal: Callable[[NexusError], None] | None = None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    serving: LoadedVersion | None = None
    load_error: NexusError | None = None

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    # -- lifecycle -------------------------------------------------------------

    async def load(self) -> None:
        """Load the configured version off the event loop; a failure is fatal (on_fatal)."""
        started = time.perf_counter()
        try:
            entry, predictor = await asyncio.get_running_loop().run_in_executor(
                self._executor, load_model, self.settings
            )
        except NexusError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            logger.exception("loading the model failed")
            self._fail(NexusError(f"loading the model failed: {exc}"))
            return
        self.serving = LoadedVersion(entry, predictor, time.perf_counter() - started)
        logger.info(
            "serving %s on %s (loaded in %.2f s)",
            self.serving.info,
            predictor.device,
            self.serving.load_seconds,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _fail(self, error: NexusError) -> None:
        self.load_error = error
        if self.on_fatal is not None:
            self.on_fatal(error)

    # -- requests --------------------------------------------------------------

    def require_ready(self) -> LoadedVersion:
        if self.serving is None:
            if self.load_error is not None:
                raise NotReadyError(self.load_error.message)
            raise NotReadyError("the model is still loading; retry shortly.")
        return self.serving

    async def predict(self, items: Sequence[Any]) -> BatchResult:
        """One batch through the serving version; failed items are named, not raised."""
        version = self.require_ready()
        started = time.perf_counter()
        outputs = await asyncio.get_running_loop().run_in_executor(
            self._executor, version.predictor.predict, items
        )
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(items))
        self.metrics.items.inc(len(items))
        errors = {i: o.message for i, o in enumerate(outputs) if isinstance(o, ItemFailure)}
        return BatchResult(outputs, errors, version.info)

    def describe(self) -> dict[str, Any]:
        """The serving version in full, where it runs, and an input it accepts."""
        version = self.require_ready()
        return {
            **version.entry.to_dict(),
            "device": version.predictor.device,
            "load_seconds": round(version.load_seconds, 3),
            "example_input": version.predictor.example_item(),
        }

    @property
    def max_concurrent_batches(self) -> int:
        return MAX_CONCURRENT_BATCHES
