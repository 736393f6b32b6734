"""The canary's routing and judgement, on figures handed to it (no clock, no server)."""

from __future__ import annotations

import itertools

import pytest

from model_server.delivery.canary import BatchFigure, CanaryRules, CanaryWindow


def window(**rules: object) -> CanaryWindow:
    return CanaryWindow(CanaryRules(**rules), started_at=100.0, baseline=())  # type: ignore[arg-type]


@pytest.mark.parametrize("percent", [0, 1, 10, 33, 50, 100])
def test_the_share_of_batches_is_exact_and_spread(percent: int) -> None:
    trial = window(percent=percent)
    routed = [trial.route_to_candidate() for _ in range(1000)]
    assert sum(routed) == 10 * percent
    if 0 < percent <= 50:  # never two candidate batches in a row below one half
        assert not any(a and b for a, b in itertools.pairwise(routed))


def test_no_verdict_before_enough_items_and_time() -> None:
    trial = window(min_items=10, min_seconds=5.0)
    trial.record(True, BatchFigure(8, 0, 0.01))
    trial.record(False, BatchFigure(8, 0, 0.01))
    assert trial.verdict(now=200.0) is None  # 8 candidate items
    trial.record(True, BatchFigure(4, 0, 0.01))
    assert trial.verdict(now=104.0) is None  # 4 s
    verdict = trial.verdict(now=105.0)
    assert verdict is not None
    assert verdict.promote


def test_an_error_rate_over_the_current_plus_one_point_rolls_back() -> None:
    trial = window(min_items=1, min_seconds=0)
    trial.record(False, BatchFigure(100, 2, 0.01))
    trial.record(True, BatchFigure(100, 3, 0.01))
    assert trial.judge().promote  # 3% vs 2% + 1 point
    trial.record(True, BatchFigure(100, 1, 0.01))
    assert trial.judge().promote
    failing = window(min_items=1, min_seconds=0)
    failing.record(False, BatchFigure(100, 2, 0.01))
    failing.record(True, BatchFigure(100, 20, 0.01))
    verdict = failing.judge()
    assert not verdict.promote
    assert verdict.reason == "error rate 20.0% is over 3.0% (current 2.0% + 1.0%)"
    assert verdict.figures["candidate"]["error_rate"] == 0.2


def test_a_p99_over_one_and_a_half_times_the_current_rolls_back() -> None:
    trial = window(min_items=1, min_seconds=0)
    for _ in range(100):
        trial.record(False, BatchFigure(4, 0, 0.040))
    for _ in range(10):
        trial.record(True, BatchFigure(4, 0, 0.059))
    assert trial.judge().promote
    trial.record(True, BatchFigure(4, 0, 0.240))
    verdict = trial.judge()
    assert not verdict.promote
    assert verdict.reason.startswith("p99 batch time 240.0 ms is over 60.0 ms")


def test_millisecond_batches_get_a_small_absolute_slack() -> None:
    trial = window(min_items=1, min_seconds=0)
    trial.record(False, BatchFigure(4, 0, 0.001))
    trial.record(True, BatchFigure(4, 0, 0.008))  # 8x, but 7 ms: jitter, not a slower model
    assert trial.judge().promote
    trial.record(True, BatchFigure(4, 0, 0.012))
    assert not trial.judge().promote


def test_with_all_traffic_on_the_candidate_the_current_is_judged_by_its_last_batches() -> None:
    baseline = [BatchFigure(4, 0, 0.010)] * 50
    trial = CanaryWindow(CanaryRules(percent=100, min_items=1, min_seconds=0), 0.0, baseline)
    assert all(trial.route_to_candidate() for _ in range(10))
    trial.record(True, BatchFigure(4, 0, 0.050))
    verdict = trial.judge()
    assert not verdict.promote
    assert verdict.figures["current"]["batches"] == 50
