"""The HPA's replica rule, against the cases the Kubernetes documentation gives
("Horizontal Pod Autoscaling", algorithm details), and the sizing of a rate."""

from __future__ import annotations

import pytest

from batch_proxy.autoscaling import MetricReading, desired_replicas, replicas_for_rate

CASES = [
    # (why, current, metrics, min, max, expected)
    ("200m against a 100m target doubles", 3, [MetricReading(200, 100)], 1, 10, 6),
    ("50m against 100m halves", 4, [MetricReading(50, 100)], 1, 10, 2),
    ("ratio 1.05 is within the 0.1 tolerance", 4, [MetricReading(105, 100)], 1, 10, 4),
    ("ratio 0.91 is within the tolerance too", 4, [MetricReading(91, 100)], 1, 10, 4),
    ("ratio 1.11 is outside it: ceil(4 * 1.11)", 4, [MetricReading(111, 100)], 1, 10, 5),
    ("ceil rounds up: 3 * 1.5 = 4.5", 3, [MetricReading(150, 100)], 1, 10, 5),
    ("capped at maxReplicas", 8, [MetricReading(300, 100)], 1, 10, 10),
    ("idle: down to minReplicas, not 0", 2, [MetricReading(0, 32)], 1, 10, 1),
    ("a workload scaled to 0 turns the HPA off", 0, [MetricReading(500, 100)], 1, 10, 0),
    (
        "AverageValue divides the total first",
        2,
        [MetricReading(600, 100, "AverageValue")],
        1,
        10,
        6,
    ),
    ("Utilization: 90% against 50%", 2, [MetricReading(90, 50, "Utilization")], 1, 10, 4),
    (
        "several metrics: the largest proposal (CPU as a floor under the queue)",
        4,
        [MetricReading(8, 32), MetricReading(75, 50, "Utilization")],
        1,
        10,
        6,
    ),
    (
        "above maxReplicas with no change wanted: back to it",
        12,
        [MetricReading(100, 100)],
        1,
        10,
        10,
    ),
    ("below minReplicas: up to it", 1, [MetricReading(100, 100)], 2, 10, 2),
]


@pytest.mark.parametrize(
    ("current", "metrics", "low", "high", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_desired_replicas(
    current: int, metrics: list[MetricReading], low: int, high: int, expected: int
) -> None:
    assert desired_replicas(current, metrics, min_replicas=low, max_replicas=high) == expected


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    idle = [MetricReading(0, 32)]
    assert desired_replicas(6, idle, max_replicas=10, recent=[6, 5, 4]) == 6
    assert desired_replicas(6, idle, max_replicas=10, recent=[3, 2]) == 3
    assert desired_replicas(6, idle, max_replicas=10, recent=[]) == 1
    busy = [MetricReading(64, 32)]
    assert desired_replicas(3, busy, max_replicas=10, recent=[1]) == 6  # up at once


def test_a_custom_tolerance() -> None:
    metric = [MetricReading(105, 100)]
    assert desired_replicas(10, metric, max_replicas=20, tolerance=0.01) == 11


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="not valid"):
        desired_replicas(2, [MetricReading(1, 1)], min_replicas=3, max_replicas=2)


@pytest.mark.parametrize(
    ("rate", "capacity", "utilisation", "expected"),
    [
        (100, 160, 0.8, 1),
        (128, 160, 0.8, 1),
        (129, 160, 0.8, 2),
        (1000, 160, 0.8, 8),
        (1000, 160, 1.0, 7),
        (0, 160, 0.8, 1),
    ],
)
def test_replicas_for_rate(rate: float, capacity: float, utilisation: float, expected: int) -> None:
    assert replicas_for_rate(rate, capacity, utilisation) == expected


def test_replicas_for_rate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="capacity must be positive"):
        replicas_for_rate(100, 0)
