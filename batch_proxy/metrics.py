"""Prometheus metrics of the proxy, in a registry of its own.

Besides traffic, the batching decisions are visible: the batch size
distribution, how long batches were held back to fill up while an upstream was
free, and the policy's current estimates (batch time, arrival rate, returning
callers, target batch size, upstream concurrency).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from batch_proxy.policies import BatchPolicy

_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64, 128, 256)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProxyMetrics:
    """Counters and histograms; also the batcher's observer."""

    def __init__(
        self,
        queue_depth: Callable[[], int],
        inflight: Callable[[], int],
        ready_upstreams: Callable[[], int],
        policy: BatchPolicy,
    ) -> None:
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
        self.fill_wait = Histogram(
            "nexus_proxy_fill_wait_seconds",
            "Per batch: how long it was held back, with an upstream free, to collect more items.",
            buckets=(0.0, *_SECONDS_BUCKETS),
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
        ready = Gauge(
            "nexus_proxy_ready_upstreams",
            "Upstreams taking batches now (healthy, not draining).",
            registry=self.registry,
        )
        ready.set_function(lambda: float(ready_upstreams()))
        per_upstream = Gauge(
            "nexus_proxy_queue_depth_per_upstream",
            "Items waiting per ready upstream: the model servers' autoscaling signal. 0 when "
            "idle, never absent; with no ready upstream, the items waiting.",
            registry=self.registry,
        )
        per_upstream.set_function(lambda: queue_depth() / max(1, ready_upstreams()))
        self.registry.register(_PolicyEstimates(policy))
        self._by_status: dict[int, Counter] = {}
        self.admissions = Counter(
            "nexus_proxy_admissions",
            "POST /predict requests by API key name and outcome (admitted, rejected_401, "
            "rejected_429); only with --api-keys.",
            ["key", "outcome"],
            registry=self.registry,
        )
        self._by_key: dict[tuple[str, int], Counter] = {}

    def admitted(self, key_name: str, status: int) -> None:
        counter = self._by_key.get((key_name, status))
        if counter is None:
            outcome = "admitted" if status == 200 else f"rejected_{status}"
            counter = self._by_key[(key_name, status)] = self.admissions.labels(key_name, outcome)
        counter.inc()

    def request_done(self, status: int) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.requests.labels(status=str(status))
        counter.inc()

    def batch_sent(self, size: int, queue_waits: Sequence[float], fill_wait: float) -> None:
        self.batch_size.observe(size)
        self.fill_wait.observe(fill_wait)
        for wait in queue_waits:
            self.queue_wait.observe(wait)

    def batch_done(self, seconds: float) -> None:
        self.upstream_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PolicyEstimates(Collector):
    """The policy's estimates, read at scrape time."""

    def __init__(self, policy: BatchPolicy) -> None:
        self._policy = policy

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "nexus_proxy_policy_estimate",
            f"What the '{self._policy.name}' batching policy currently estimates.",
            labels=["estimate"],
        )
        for name, value in self._policy.estimates(time.monotonic()).items():
            family.add_metric([name], value)
        yield family
        info = GaugeMetricFamily(
            "nexus_proxy_policy", "The batching policy in use.", labels=["policy"]
        )
        info.add_metric([self._policy.name], 1.0)
        yield info
