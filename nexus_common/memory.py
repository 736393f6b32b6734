"""Keep the cyclic collector out of the way under load, and give memory back after a burst.

`freeze_startup_heap` (both servers): what a server imported and built before serving
(about 40,000 long-lived objects in the proxy) is moved out of the collector's view, so a
full collection under load walks only what serving made. Measured in the proxy under load
at 8 and 32 callers: each full collection stalled the event loop 28-32 ms before (a lost
model run for every caller waiting) and 3.5-6.7 ms after.

A burst (thousands of connections at once, a disconnect storm) leaves the C allocator
holding the pages it needed: Python frees the objects, but glibc keeps its free heap
for reuse, so the process's resident memory stays at the burst's high-water mark. Once
the proxy is idle, a full collection frees what sits in cycles and `malloc_trim(0)`
returns the free pages (glibc only; elsewhere only the collection runs).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

TRIM_INTERVAL_S = 5.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM: Callable[[int], int] = _malloc_trim() or (lambda _pad: 0)


def trim_c_heap() -> None:
    """Give glibc's free pages back to the system now (a no-op where there is no
    `malloc_trim`): after a burst, or after a model was dropped."""
    _TRIM(0)


def freeze_startup_heap() -> None:
    """Collect once, then freeze what is left (it lives as long as the process); call it
    once, after startup and before serving."""
    gc.collect()
    gc.freeze()


async def trim_when_idle(
    requests: Callable[[], int], busy: Callable[[], int], interval_s: float = TRIM_INTERVAL_S
) -> None:
    """Trim the heap once after each burst: when requests came (`requests()`, a running
    count, moved) and then none for a whole `interval_s`, with none queued or in flight
    (`busy()` is 0). Never under load: a collection and a trim take milliseconds, and the
    pages given back would be faulted in again at once."""
    seen = trimmed = requests()
    while True:
        await asyncio.sleep(interval_s)
        count = requests()
        if count == seen and count != trimmed and not busy():
            trimmed = count
            # Tasks that ended in an exception sit in reference cycles (exception, traceback,
            # frame) that only a full collection frees; a burst leaves thousands of them.
            gc.collect()
            trim_c_heap()
        seen = count
