"""Inference statistics in the shape of the Open Inference Protocol's statistics extension
(Triton's `GET /v2/models/{name}/stats`), so `tritonclient`'s `get_inference_statistics`
reads them. Counted per served model on the event loop (no lock): a request is one call
of `/predict/batch` or `/v2/models/{name}/infer`, an execution one batch through the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class InferenceStats:
    inference_count: int = 0  # rows (items) inferred
    execution_count: int = 0  # batches run
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)

    def record(self, rows: int, ok: bool, waited_s: float, compute_s: float) -> None:
        """One request of `rows` rows: answered or failed, after `waited_s` for the model
        (its queue) and `compute_s` in it."""
        (self.success if ok else self.fail).add(waited_s + compute_s)
        self.queue.add(waited_s)
        self.last_inference_ms = int(time.time() * 1000)
        if ok:
            self.inference_count += rows
            self.execution_count += 1
            self.compute_infer.add(compute_s)
            self.batches.setdefault(rows, Duration()).add(compute_s)

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        zero = Duration().to_json()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": zero,
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": zero,
                    "compute_infer": duration.to_json(),
                    "compute_output": zero,
                }
                for size, duration in sorted(self.batches.items())
            ],
        }
