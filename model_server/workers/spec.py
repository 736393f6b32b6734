"""What a worker is told: the version to load and how to confine itself (JSON both ways),
and the environment worker processes start with.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any

# Variables a worker keeps from the server's environment, by name or prefix: locale, the
# library paths, thread counts and GPU selection. Everything else (storage keys, tokens,
# NEXUS_* settings) stays in the server: a model's code cannot read what it never had.
KEPT_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
    }
)
KEPT_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "KMP_")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def worker_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker processes: the kept variables, the server's import
    path (so a handler imports as it would in the server), hubs offline."""
    environ = dict(os.environ if environ is None else environ)
    kept = {
        name: value
        for name, value in environ.items()
        if name in KEPT_NAMES or name.startswith(KEPT_PREFIXES)
    }
    paths = [entry for entry in sys.path if entry and os.path.isdir(entry)]
    kept["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    kept.setdefault("PATH", "/usr/bin:/bin")
    return {**kept, **OFFLINE}


@dataclass(frozen=True)
class WorkerSpec:
    """One version's workers: what to load, on what, and within what."""

    label: str  # the version, for log lines (`model@abc1234`)
    path: str
    format: str | None
    device: str
    dtype: str = "float32"
    handler: str | None = None
    trust_pickle: bool = False
    trust_remote_code: bool = False
    task: str | None = None  # a transformers folder's task
    signature: dict[str, Any] | None = None  # the recorded one, as JSON
    warmup_sizes: tuple[int, ...] = (1,)
    threads: int = 1  # CPU threads of this worker (the machine's, split across instances)
    confine: bool = True
    memory_bytes: int | None = None  # the address-space limit (CPU workers)
    open_files: int = 1024
    tmpdir: str = ""  # the one folder it may write (made by the server, 0700)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # --worker-env's variables

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerSpec:
        fields = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        values["warmup_sizes"] = tuple(values.get("warmup_sizes", (1,)))
        return cls(**values)
