"""What the adaptive policy learns from what it sees: batch time, arrival rate, returning callers.

Each estimator is plain arithmetic over the times it is handed (no clock of its
own), so it is exact under a fake clock and cheap enough to run per item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["ArrivalRate", "BatchTimeModel", "ReturnTracker"]


class BatchTimeModel:
    """Seconds per batch as `fixed + per_item * n`, fitted by exponentially weighted least squares.

    Recent batches weigh most (`decay` per batch), so a model that slows down or
    speeds up is followed within a few dozen batches. The slope is shrunk towards
    zero (`ridge`, in items squared), so batches that all have one size give that
    size's mean time instead of a wild slope, and it is never negative.
    """

    def __init__(self, decay: float = 0.95, ridge: float = 1.0) -> None:
        self._decay = decay
        self._ridge = ridge
        self._w = self._n = self._nn = self._t = self._nt = 0.0

    @property
    def known(self) -> bool:
        return self._w > 0.0

    def observe(self, size: int, seconds: float) -> None:
        d = self._decay
        self._w = self._w * d + 1.0
        self._n = self._n * d + size
        self._nn = self._nn * d + size * size
        self._t = self._t * d + seconds
        self._nt = self._nt * d + size * seconds

    def coefficients(self) -> tuple[float, float]:
        """(fixed seconds, seconds per item); (0, 0) before the first batch."""
        if self._w == 0.0:
            return 0.0, 0.0
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var_n = max(0.0, self._nn / self._w - mean_n * mean_n)
        cov = self._nt / self._w - mean_n * mean_t
        per_item = max(0.0, cov / (var_n + self._ridge))
        fixed = mean_t - per_item * mean_n
        if fixed < 0.0:  # a line through the origin fits better than a negative intercept
            fixed, per_item = 0.0, self._t / self._n if self._n > 0 else 0.0
        return fixed, per_item

    def predict(self, size: float) -> float:
        fixed, per_item = self.coefficients()
        return fixed + per_item * size


class ArrivalRate:
    """Items per second, as an exponentially decayed count over `tau_s`."""

    def __init__(self, tau_s: float = 0.2) -> None:
        self.tau_s = tau_s
        self._count = 0.0
        self._last = 0.0

    def arrived(self, now: float) -> None:
        self._count = self._count * math.exp((self._last - now) / self.tau_s) + 1.0
        self._last = now

    def rate(self, now: float) -> float:
        return self._count * math.exp((self._last - now) / self.tau_s) / self.tau_s


@dataclass(slots=True)
class _Window:
    start: float
    end: float
    size: int
    offsets: list[float] = field(default_factory=list)


class ReturnTracker:
    """How many answered callers come straight back, and how soon: closed-loop clients.

    A client that sends its next request as soon as it has an answer comes back
    within a moment of its batch being answered. After each answer the arrivals
    in a short window are counted and compared with the background rate (the
    rate outside any window); the excess, per answered item, is the return
    `fraction` (about 1 for closed-loop clients, about 0 for independent
    arrivals), and the offset of the last returning arrival is the return `lag`.
    """

    def __init__(self, alpha_min: float = 0.1) -> None:
        self.fraction = 0.0
        self.lag_s = 0.001
        self._alpha_min = alpha_min
        self._samples = 0
        self._lag_samples = 0
        self._bg_time = 0.0
        self._bg_count = 0.0
        self._outside_since: float | None = None
        self._outside_count = 0
        self._window: _Window | None = None

    @property
    def background_rate(self) -> float:
        return self._bg_count / self._bg_time if self._bg_time > 0.0 else 0.0

    def answered(self, now: float, size: int, horizon_s: float) -> None:
        """A batch of `size` was answered: watch the next `horizon_s` for its callers."""
        window = self._window
        if window is not None and now <= window.end:
            window.size += size  # answers close together share one window
            window.end = max(window.end, now + horizon_s)
            return
        self._close(now)
        if self._outside_since is not None:
            decay = 0.9
            self._bg_time = self._bg_time * decay + (now - self._outside_since)
            self._bg_count = self._bg_count * decay + self._outside_count
        self._outside_since, self._outside_count = None, 0
        self._window = _Window(now, now + horizon_s, size)

    def arrived(self, now: float) -> None:
        window = self._window
        if window is not None:
            if now <= window.end:
                window.offsets.append(now - window.start)
                return
            self._close(now)
        self._outside_count += 1

    def pending(self, now: float) -> float:
        """Returning callers still expected in the open window (0 when none is open)."""
        window = self._window
        if window is None or now > window.end:
            return 0.0
        return self.fraction * window.size - len(window.offsets)

    def due(self) -> float:
        """When the open window's callers should all be back: its start plus the usual lag."""
        window = self._window
        if window is None:
            return -math.inf
        return min(window.end, window.start + 1.5 * self.lag_s + 0.0002)

    def _close(self, now: float) -> None:
        window = self._window
        if window is None or now <= window.end:
            return
        self._window = None
        self._outside_since = window.end
        background = self.background_rate * (window.end - window.start)
        excess = len(window.offsets) - background - 2 * math.sqrt(background)
        self._samples += 1
        alpha = max(self._alpha_min, 1.0 / self._samples)
        sample = min(1.0, max(0.0, excess / window.size)) if window.size else 0.0
        self.fraction += alpha * (sample - self.fraction)
        if excess >= 1.0:
            self._lag_samples += 1
            lag = window.offsets[min(len(window.offsets), math.ceil(excess)) - 1]
            self.lag_s += max(self._alpha_min, 1.0 / self._lag_samples) * (lag - self.lag_s)
