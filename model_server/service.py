"""The model server's state and what can be done with it, apart from HTTP.

`ModelService` loads versions on a loader thread, predicts batches on inference threads
(one per batch that may run at once: `--instances` workers, or one in process), describes what it
serves, and counts what it does. A version in service is a `LoadedVersion`:
`serving` answers, and during a rollout a `Trial` holds the candidate beside
it and takes the canary's share of batches. Each batch is answered by exactly
one version, chosen when it arrives; a replaced version is freed on the
inference thread after the batches already given to it (the queue is FIFO).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from control_plane import ModelEntry, Registry
from model_server.delivery.canary import Baseline, BatchFigure, CanaryRules, CanaryWindow, Verdict
from model_server.errors import ItemDecodeError, NotReadyError
from model_server.inference import build_predictor, free_device_memory, resolve_device, warm_up
from model_server.loader import fetch_entry
from model_server.metrics import ServerMetrics
from model_server.predictor import ItemFailure, Predictor
from model_server.settings import ServerSettings
from model_server.stats import InferenceStats
from model_server.tensors import TensorPredictor
from model_server.workers.remote import start_workers
from nexus_common import wire
from nexus_common.signature import Signature

logger = logging.getLogger("nexus.model_server")

LOADING = "the model is still loading"  # /ready's reason until the first version serves
R = TypeVar("R")


@dataclass(frozen=True)
class LoadedVersion:
    """One version, fetched, verified, loaded and warmed: ready to answer."""

    entry: ModelEntry
    predictor: Predictor
    load_seconds: float

    @property
    def key(self) -> str:
        return version_key(self.entry)

    @property
    def info(self) -> dict[str, Any]:
        return version_info(self.entry)


def version_key(entry: ModelEntry) -> str:
    """What makes two versions the same: their bytes (or, without a hash, their commit)."""
    return entry.sha256 or f"{entry.model_name}@{entry.commit_hash}"


def version_info(entry: ModelEntry) -> dict[str, Any]:
    """Who answered, as every reply says it."""
    return {"name": entry.model_name, "commit_hash": entry.commit_hash, "sha256": entry.sha256}


@dataclass(frozen=True)
class BatchResult:
    """Outputs in input order, the failed indices with their reasons, and who answered."""

    outputs: list[Any]
    errors: dict[int, str]
    model: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return wire.reply_body(self.outputs, self.errors, self.model)


def load_model(settings: ServerSettings) -> tuple[ModelEntry, Predictor]:
    """Resolve the configured ref, then `load_entry`. Blocking: run it in a thread."""
    entry = Registry(settings.repo).resolve(settings.model_ref, settings.model_name)
    return entry, load_entry(settings, entry)


def load_entry(
    settings: ServerSettings,
    entry: ModelEntry,
    on_failing: Callable[[str], None] | None = None,
) -> Predictor:
    """Fetch (verified, cached), load and warm up one version: in worker processes (the
    default), or in this process with `--in-process`. Blocking: run it in a thread.
    `on_failing` is told (from a thread) when the version's workers keep dying."""
    artifact = fetch_entry(Registry(settings.repo), entry, settings.cache_dir)
    device = resolve_device(settings.device)
    if not settings.in_process:
        return start_workers(settings, entry, str(artifact.path), device, on_failing)
    predictor = build_predictor(
        artifact.path,
        fmt=artifact.entry.format,
        device=device,
        dtype=settings.dtype,
        handler=settings.handler,
        trust_pickle=settings.trust_pickle,
        signature=None if entry.tensors is None else Signature.from_json(entry.tensors),
        task=entry.task,
        trust_remote_code=settings.trust_remote_code,
    )
    sizes = sorted({1, settings.warmup_batch})
    warm_up(predictor, sizes, entry.label)
    if isinstance(predictor, TensorPredictor) and predictor.signature is None:
        logger.warning(
            "%s has no recorded signature and does not show its input: served as one input, "
            "'input', of any shape, its outputs unnamed in the v2 metadata and not warmed up "
            "(store it with --example-input or --signature)",
            entry.label,
        )
    logger.info(
        "%s warmed up in %.3f s (batches of %s rows)",
        entry.label,
        predictor.warmup_seconds,
        " and ".join(map(str, sizes)),
    )
    return predictor


def rules_from(settings: ServerSettings) -> CanaryRules:
    return CanaryRules(
        percent=settings.canary_percent,
        min_items=settings.canary_min_items,
        min_seconds=settings.canary_min_s,
        max_error_increase=settings.canary_max_error_increase,
        max_latency_ratio=settings.canary_max_latency_ratio,
    )


@dataclass
class Trial:
    """A candidate on canary: answers its window's share of batches until a verdict."""

    version: LoadedVersion
    window: CanaryWindow
    verdict: asyncio.Future[Verdict]

    def record(self, to_candidate: bool, figure: BatchFigure) -> None:
        self.window.record(to_candidate, figure)
        self.decide()

    def decide(self) -> None:
        if not self.verdict.done():
            verdict = self.window.verdict(time.monotonic())
            if verdict is not None:
                self.verdict.set_result(verdict)


class ModelService:
    def __init__(self, settings: ServerSettings, metrics: ServerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServerMetrics()
        self.stats = InferenceStats()
        self.serving: LoadedVersion | None = None
        self.previous: ModelEntry | None = None  # the version `serving` replaced
        self.trial: Trial | None = None
        self.not_ready = f"{LOADING}; retry shortly."
        self._baseline = Baseline()
        # one thread per batch that may run at once: a worker each (one, in process)
        self.max_concurrent_batches = 1 if settings.in_process else settings.instances
        self._executor = ThreadPoolExecutor(
            max_workers=self.max_concurrent_batches, thread_name_prefix="inference"
        )
        # told when a version's workers keep dying (the rollout rolls it back)
        self.on_failing: Callable[[ModelEntry, str], None] | None = None
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader")

    # -- versions --------------------------------------------------------------

    async def load(self, entry: ModelEntry) -> LoadedVersion:
        """Fetch, verify, load and warm `entry` on the loader thread; inference goes on."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()

        def failing(reason: str) -> None:  # from a pool's thread
            if self.on_failing is not None:
                loop.call_soon_threadsafe(self.on_failing, entry, reason)

        predictor = await loop.run_in_executor(
            self._loader, load_entry, self.settings, entry, failing
        )
        return LoadedVersion(entry, predictor, time.perf_counter() - started)

    def serve(self, version: LoadedVersion) -> None:
        """Make `version` the one that answers; the one it replaces is freed."""
        old, self.serving = self.serving, version
        if old is not None and old is not version:
            self.previous = old.entry
        self._baseline.clear()
        self.metrics.serving.info({k: str(v) for k, v in version.info.items()})
        logger.info(
            "serving %s on %s (loaded in %.2f s)",
            version.info,
            version.predictor.device,
            version.load_seconds,
        )
        if old is not None and old is not version:
            self.metrics.swaps.inc()
            self.discard(old)

    def start_trial(self, version: LoadedVersion, rules: CanaryRules) -> Trial:
        window = CanaryWindow(rules, time.monotonic(), self._baseline.snapshot())
        self.trial = Trial(version, window, asyncio.get_running_loop().create_future())
        return self.trial

    def end_trial(self, trial: Trial) -> None:
        if self.trial is trial:
            self.trial = None

    def discard(self, version: LoadedVersion) -> None:
        """Free a version's memory (CUDA included) after the batches already queued for it."""
        self._executor.submit(_release, version.predictor)

    def close(self) -> None:
        """Stop: queued batches are cancelled, the versions' workers stop after theirs."""
        for executor in (self._executor, self._loader):
            executor.shutdown(wait=False, cancel_futures=True)
        versions = [self.serving, self.trial.version if self.trial else None]
        for version in versions:
            if version is not None:
                version.predictor.close()

    # -- requests --------------------------------------------------------------

    def require_ready(self) -> LoadedVersion:
        if self.serving is None:
            raise NotReadyError(self.not_ready)
        return self.serving

    async def predict(self, items: Sequence[Any]) -> BatchResult:
        """One batch through one version; failed items are named, not raised."""
        outputs, version = await self._on_one_version(
            len(items), lambda predictor: predictor.predict(items), _failures
        )
        errors = {i: o.message for i, o in enumerate(outputs) if isinstance(o, ItemFailure)}
        return BatchResult(outputs, errors, version.info)

    async def infer(
        self, inputs: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], LoadedVersion]:
        """One batch of every input through one version (the v2 protocol): named outputs."""

        def run(predictor: Predictor) -> dict[str, np.ndarray]:
            if not isinstance(predictor, TensorPredictor):
                raise ItemDecodeError(
                    "the v2 protocol serves TorchScript and ONNX models; this one has a "
                    "handler: use POST /predict."
                )
            return predictor.run_named(inputs)

        rows = len(next(iter(inputs.values())))
        return await self._on_one_version(rows, run, lambda _: 0)

    async def _on_one_version(
        self, size: int, work: Callable[[Predictor], R], failures: Callable[[R], int]
    ) -> tuple[R, LoadedVersion]:
        """Run `work` on the serving version or, for its share of batches, the canary; record
        the batch's figures for the canary's verdict."""
        version = self.require_ready()
        trial = self.trial
        to_candidate = (
            trial is not None and not trial.verdict.done() and trial.window.route_to_candidate()
        )
        if to_candidate:
            assert trial is not None
            version = trial.version
        # No await between choosing and queueing: a version swapped out after this point
        # is freed behind this batch on the same thread.
        job = asyncio.get_running_loop().run_in_executor(
            self._executor, _timed, work, version.predictor
        )
        queued = time.perf_counter()
        try:
            result, seconds = await job
        except Exception:
            self._record(trial, to_candidate, BatchFigure(size, size, 0.0))
            self.stats.record(size, False, time.perf_counter() - queued, 0.0)
            raise
        self._record(trial, to_candidate, BatchFigure(size, failures(result), seconds))
        self.stats.record(size, True, max(0.0, time.perf_counter() - queued - seconds), seconds)
        self.metrics.inference_seconds.observe(seconds)
        self.metrics.batch_size.observe(size)
        self.metrics.items.inc(size)
        return result, version

    def _record(self, trial: Trial | None, to_candidate: bool, figure: BatchFigure) -> None:
        if not to_candidate:
            self._baseline.add(figure)
        if trial is not None and trial is self.trial:
            trial.record(to_candidate, figure)

    def describe(self) -> dict[str, Any]:
        """The serving version in full, where it runs, and an input it accepts."""
        version = self.require_ready()
        return {
            **version.entry.to_dict(),
            "device": version.predictor.device,
            "load_seconds": round(version.load_seconds, 3),
            "warmup_seconds": round(version.predictor.warmup_seconds, 3),
            "example_input": version.predictor.example_item(),
            "runtime": version.predictor.runtime(),
        }


def _timed(work: Callable[[Predictor], R], predictor: Predictor) -> tuple[R, float]:
    """The batch's result and its time in the model, measured on the inference thread (no
    queueing)."""
    started = time.perf_counter()
    result = work(predictor)
    return result, time.perf_counter() - started


def _failures(outputs: list[Any]) -> int:
    return sum(isinstance(o, ItemFailure) for o in outputs)


def _release(predictor: Predictor) -> None:
    predictor.close()
    free_device_memory(predictor.device)
