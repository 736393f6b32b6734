"""The canary: which batches a candidate answers, and whether it may take all traffic.

Pure bookkeeping over times and figures it is handed (no clock, no I/O), so the
judgement is tested exactly. A window compares the candidate with the current
version over the same stretch of time: per-item error rate and p99 batch time.
With 100% to the candidate the current version answers nothing in the window,
so its figures are those of its last batches before the window (blue/green
with the old version kept loaded until the verdict).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

BASELINE_BATCHES = 1000  # the current version's recent batches kept for a 100% window


@dataclass(frozen=True)
class CanaryRules:
    """When a candidate is judged, and how much worse than the current one it may be."""

    percent: int = 10
    min_items: int = 200
    min_seconds: float = 10.0
    max_error_increase: float = 0.01  # error rate, as a fraction: 1 percentage point
    max_latency_ratio: float = 1.5
    latency_slack_s: float = 0.010  # below ~10 ms, a ratio judges timer jitter, not models


@dataclass(frozen=True, slots=True)
class BatchFigure:
    items: int
    errors: int
    seconds: float


class Figures:
    """One version's batches: items, failed items, batch times."""

    def __init__(self, batches: Iterable[BatchFigure] = ()) -> None:
        self.batches = list(batches)

    def add(self, figure: BatchFigure) -> None:
        self.batches.append(figure)

    @property
    def items(self) -> int:
        return sum(b.items for b in self.batches)

    @property
    def errors(self) -> int:
        return sum(b.errors for b in self.batches)

    @property
    def error_rate(self) -> float:
        items = self.items
        return self.errors / items if items else 0.0

    @property
    def p99_s(self) -> float | None:
        """Nearest-rank p99 of batch times; None without batches."""
        if not self.batches:
            return None
        times = sorted(b.seconds for b in self.batches)
        return times[max(0, math.ceil(0.99 * len(times)) - 1)]

    def summary(self) -> dict[str, Any]:
        p99 = self.p99_s
        return {
            "batches": len(self.batches),
            "items": self.items,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    figures: dict[str, Any]


class CanaryWindow:
    """A candidate's trial: routes a share of batches to it and judges it when enough is seen."""

    def __init__(self, rules: CanaryRules, started_at: float, baseline: Iterable[BatchFigure]):
        self.rules = rules
        self.started_at = started_at
        self.candidate = Figures()
        self.current = Figures()
        self._baseline = Figures(baseline)
        self._batches = 0

    def route_to_candidate(self) -> bool:
        """Spread the share evenly: batch n goes to the candidate when n * percent crosses 100."""
        n = self._batches
        self._batches += 1
        return (n + 1) * self.rules.percent // 100 > n * self.rules.percent // 100

    def record(self, to_candidate: bool, figure: BatchFigure) -> None:
        (self.candidate if to_candidate else self.current).add(figure)

    def verdict(self, now: float) -> Verdict | None:
        """None until the window holds min_items of the candidate's and min_seconds have passed."""
        if self.candidate.items < self.rules.min_items:
            return None
        if now - self.started_at < self.rules.min_seconds:
            return None
        return self.judge()

    def judge(self) -> Verdict:
        current = self.current if self.current.batches else self._baseline
        figures = {"candidate": self.candidate.summary(), "current": current.summary()}
        rules = self.rules
        allowed = current.error_rate + rules.max_error_increase
        if self.candidate.error_rate > allowed:
            return Verdict(
                False,
                f"error rate {self.candidate.error_rate:.1%} is over {allowed:.1%} "
                f"(current {current.error_rate:.1%} + {rules.max_error_increase:.1%})",
                figures,
            )
        mine, theirs = self.candidate.p99_s, current.p99_s
        if mine is not None and theirs is not None:
            limit = max(theirs * rules.max_latency_ratio, theirs + rules.latency_slack_s)
            if mine > limit:
                return Verdict(
                    False,
                    f"p99 batch time {mine * 1000:.1f} ms is over {limit * 1000:.1f} ms "
                    f"({rules.max_latency_ratio:g}x the current {theirs * 1000:.1f} ms)",
                    figures,
                )
        return Verdict(True, "error rate and p99 within the thresholds", figures)


class Baseline:
    """The serving version's most recent batches, for a window that sends it nothing."""

    def __init__(self) -> None:
        self._recent: deque[BatchFigure] = deque(maxlen=BASELINE_BATCHES)

    def add(self, figure: BatchFigure) -> None:
        self._recent.append(figure)

    def snapshot(self) -> list[BatchFigure]:
        return list(self._recent)

    def clear(self) -> None:
        self._recent.clear()
