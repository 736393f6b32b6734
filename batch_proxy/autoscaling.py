"""How many model-server replicas an autoscaler would choose, and how many a rate needs.

The model servers scale on the proxy's `nexus_proxy_queue_depth_per_upstream` (items
waiting per ready upstream; deploy/k8s/). `desired_replicas` is the Kubernetes
HorizontalPodAutoscaler's own rule (kubernetes.io, "Horizontal Pod Autoscaling",
algorithm details), so a team can see what its HPA will do with a figure before a
cluster does it; `replicas_for_rate` is the sizing docs/scaling.md is made from.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

DEFAULT_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance

TargetType = Literal["Value", "AverageValue", "Utilization"]


@dataclass(frozen=True)
class MetricReading:
    """One metric of an HPA: the value read now and its target.

    `Value` and `Utilization` compare the value with the target directly (the proxy's
    per-upstream queue depth is already an average); `AverageValue` divides a total
    over the current replicas first.
    """

    value: float
    target: float
    target_type: TargetType = "Value"

    def ratio(self, current: int) -> float:
        value = self.value / current if self.target_type == "AverageValue" else self.value
        return value / self.target


def proposal(current: int, metric: MetricReading, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """One metric's replica count: ceil(current * value / target), unchanged within the
    tolerance."""
    ratio = metric.ratio(current)
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


def desired_replicas(
    current: int,
    metrics: Iterable[MetricReading],
    *,
    min_replicas: int = 1,
    max_replicas: int,
    tolerance: float = DEFAULT_TOLERANCE,
    recent: Iterable[int] = (),
) -> int:
    """The replica count the HPA sets: the largest proposal of its metrics, kept within
    [min_replicas, max_replicas].

    A workload scaled to 0 by hand is left alone (the HPA turns itself off). `recent`
    are the recommendations of the scale-down stabilisation window (300 s by default):
    the HPA scales down only to the highest of them.
    """
    if current == 0:
        return 0
    if min_replicas < 1 or max_replicas < min_replicas:
        raise ValueError(f"replica bounds [{min_replicas}, {max_replicas}] are not valid.")
    proposals = [proposal(current, metric, tolerance) for metric in metrics]
    wanted = max(proposals) if proposals else current
    if wanted < current:
        wanted = min(current, max([wanted, *recent]))
    return max(min_replicas, min(max_replicas, wanted))


def replicas_for_rate(
    items_per_s: float, per_replica_items_per_s: float, utilisation: float = 0.8
) -> int:
    """Replicas that serve `items_per_s` with each at most `utilisation` busy (the rest is
    headroom for bursts and for a replica lost to a rollout or a node drain)."""
    if per_replica_items_per_s <= 0 or not 0 < utilisation <= 1:
        raise ValueError("the capacity must be positive and the utilisation in (0, 1].")
    return max(1, math.ceil(items_per_s / (per_replica_items_per_s * utilisation)))
