"""Handlers whose every batch holds the GIL for 20 ms, as pre- and post-processing in Python
do (tokenising, decoding images): the load that N worker processes run N at a time and
threads in one process cannot. `HoldsGil` waits in C without releasing the GIL (no CPU
used: it measures the parallelism itself); `BurnsGil` spins in Python (it measures the
CPUs too)."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Any

BATCH_SECONDS = 0.020
HOLDS = "tests.harness.gil:HoldsGil"
BURNS = "tests.harness.gil:BurnsGil"


class HoldsGil:
    def load(self, path: Path, device: str) -> None:
        self._libc = ctypes.PyDLL(None)  # a PyDLL call keeps the GIL

    def predict(self, items: list[Any]) -> list[Any]:
        self._libc.usleep(int(BATCH_SECONDS * 1e6))
        return items


class BurnsGil:
    def load(self, path: Path, device: str) -> None:
        pass

    def predict(self, items: list[Any]) -> list[Any]:
        end = time.perf_counter() + BATCH_SECONDS
        while time.perf_counter() < end:
            pass
        return items
