"""Prometheus metrics of the model server, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nexus_model_requests",
            "Prediction requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nexus_model_batch_size",
            "Items per inference batch.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "nexus_model_inference_seconds",
            "Time of one batch in the model (decode, forward, encode).",
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.items = Counter(
            "nexus_model_items",
            "Items predicted (including per-item errors).",
            registry=self.registry,
        )

        self.serving = Info(
            "nexus_model_serving",
            "The version that answers: model name, commit and sha256.",
            registry=self.registry,
        )
        self.swaps = Counter(
            "nexus_model_swaps",
            "Times a new version replaced the serving one without a restart.",
            registry=self.registry,
        )
        self.rollbacks = Counter(
            "nexus_model_rollbacks",
            "Candidates rolled back after their canary window.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
