"""A handler named as `package.module:Class`, imported: what `nexus store --handler` reads a
signature from and what the model server (in its workers) loads a model with."""

from __future__ import annotations

import importlib
from typing import Any

from nexus_common.errors import HandlerSpecError


def import_class(spec: str) -> Any:
    """The class `spec` names; HandlerSpecError with one sentence when it cannot be had."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise HandlerSpecError(f"a handler is named package.module:Class, not '{spec}'.")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise HandlerSpecError(f"cannot import the handler '{spec}': {exc}.") from None
