"""Prometheus metrics of the proxy, in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64, 128, 256)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProxyMetrics:
    """Counters and histograms; also the batcher's observer."""

    def __init__(self, queue_depth: Callable[[], int], inflight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nexus_proxy_requests",
            "POST /predict requests answered, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nexus_proxy_batch_size",
            "Items per batch sent upstream.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "nexus_proxy_queue_wait_seconds",
            "Time from arrival to the batch being sent.",
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "nexus_proxy_upstream_seconds",
            "Duration of one upstream batch call.",
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        depth = Gauge("nexus_proxy_queue_depth", "Items waiting.", registry=self.registry)
        depth.set_function(lambda: float(queue_depth()))
        batches = Gauge(
            "nexus_proxy_inflight_batches",
            "Batches sent, not yet answered.",
            registry=self.registry,
        )
        batches.set_function(lambda: float(inflight()))
        self._by_status: dict[int, Counter] = {}

    def request_done(self, status: int) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.requests.labels(status=str(status))
        counter.inc()

    def batch_sent(self, size: int, queue_waits: Sequence[float]) -> None:
        self.batch_size.observe(size)
        for wait in queue_waits:
            self.queue_wait.observe(wait)

    def batch_done(self, seconds: float) -> None:
        self.upstream_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
