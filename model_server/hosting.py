"""The models one server serves: each its own service (loader, inference thread, metrics)
and its own rollout, the first the default of `/predict`.

One model is the usual case (`--model-name`/`--model-ref`); `--models resnet:production,
bert:latest` serves several, loaded in parallel at start. A model is found by its name;
a server of one unnamed model (the metadata's only one) answers to the name it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from control_plane import NexusError
from model_server.delivery.rollout import Rollout
from model_server.service import ModelService
from model_server.settings import ServerSettings
from nexus_common.supervise import Supervisor

logger = logging.getLogger("nexus.model_server")


@dataclass
class Hosted:
    """One model: its service and, while the server runs, its rollout."""

    name: str | None
    service: ModelService
    rollout: Rollout | None = None

    @property
    def serves(self) -> str | None:
        """The model's name: configured, or the one its serving version belongs to."""
        if self.name is not None:
            return self.name
        serving = self.service.serving
        return serving.entry.model_name if serving is not None else None


class Models:
    def __init__(self, settings: ServerSettings) -> None:
        self.hosted = [
            Hosted(name, ModelService(settings.for_model(name, ref)))
            for name, ref in settings.model_specs
        ]
        self.default = self.hosted[0]
        self.several = len(self.hosted) > 1
        self.supervisor = Supervisor(logger)

    def find(self, name: str) -> Hosted | None:
        """The model called `name`; a lone unnamed model still loading is taken to be it
        (its routes answer 503 "still loading", not 404)."""
        lone = self.default
        if not self.several and lone.name is None and lone.service.serving is None:
            return lone
        return next((h for h in self.hosted if h.serves == name), None)

    def health(self) -> tuple[int, dict[str, Any]]:
        """`/health`: 503 while a background task (a loop, an event publisher) is down."""
        for hosted in self.hosted:
            name = "event-publisher" + (f"[{hosted.name}]" if self.several else "")
            failing = hosted.rollout.publisher.failing if hosted.rollout else None
            self.supervisor.report(name, failing)
            serving = hosted.service.serving
            workers = serving.predictor.runtime().get("failing") if serving else None
            self.supervisor.report(
                "workers" + (f"[{hosted.name}]" if self.several else ""), workers
            )
        return self.supervisor.health()

    def names(self) -> list[str]:
        return [h.serves or "(loading)" for h in self.hosted]

    async def start(self, on_fatal: Callable[[NexusError], None] | None) -> None:
        """A rollout per model, all started at once: models load in parallel. Their loops
        run under the supervisor: a crash is logged, restarted and shown in /health."""
        for hosted in self.hosted:
            hosted.rollout = Rollout(hosted.service, hosted.service.settings, on_fatal)
            for task, loop in hosted.rollout.loops().items():
                self.supervisor.start(task if not self.several else f"{task}[{hosted.name}]", loop)

    async def stop(self) -> None:
        await self.supervisor.stop()
        for hosted in self.hosted:
            if hosted.rollout is not None:
                await hosted.rollout.stop()
            hosted.service.close()

    def render_metrics(self) -> bytes:
        """Prometheus text: one model's metrics as they are; several, labelled `model`."""
        if not self.several:
            return self.default.service.metrics.render()
        registry = CollectorRegistry()
        registry.register(
            _Labelled([(h.name or "", h.service.metrics.registry) for h in self.hosted])
        )
        return generate_latest(registry)


class _Labelled(Collector):
    """The same families from several registries, merged, each sample labelled `model`."""

    def __init__(self, sources: list[tuple[str, CollectorRegistry]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for model, registry in self._sources:
            for family in registry.collect():
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    target.add_sample(
                        sample.name,
                        {**sample.labels, "model": model},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
        yield from merged.values()
