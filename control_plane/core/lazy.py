"""Names a package exports but loads on first use (PEP 562), to keep start-up imports small."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `where[name]` when `name` is first read."""

    def __getattr__(name: str) -> Any:  # the module hook's own name
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
