"""What a store records about how a model was made: the training config and the environment."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.core.errors import UsageError

_PACKAGES = ("torch", "onnx", "onnxruntime", "numpy")


@dataclass(frozen=True)
class TrainingConfig:
    sha256: str
    params: dict[str, Any] | None


def read_training_config(path: Path) -> TrainingConfig:
    """Hash the config file; if it is YAML or JSON holding a mapping, also return it as params."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc.strerror}.") from exc
    import yaml  # only a store with --config needs it

    try:
        parsed = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        parsed = None
    params = parsed if isinstance(parsed, dict) else None
    return TrainingConfig(sha256=hashlib.sha256(data).hexdigest(), params=params)


def capture_environment() -> dict[str, str]:
    """Python's version and those of the ML packages that are installed (no imports)."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
