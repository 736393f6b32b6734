"""The hardware a version needs (`nexus store --requires cuda --min-memory 16GiB
--compute-capability 8.0`) and whether a machine has it.

Recorded in the version's entry as `requires`; checked by the model server before it
downloads a byte (a follower skips a version its machine cannot run and keeps serving) and by
`nexus serve` before it starts anything. A version without requirements runs anywhere.
Memory means the device's: a GPU's own memory on `cuda`, the machine's on the CPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from control_plane.core.errors import UsageError
from control_plane.core.units import human_size, parse_size

CUDA = "cuda"
DEVICES = (CUDA,)


@dataclass(frozen=True)
class Requirements:
    device: str | None = None  # "cuda": a GPU is needed
    min_memory: int | None = None  # bytes of the device's memory
    compute_capability: tuple[int, int] | None = None  # the GPU's, at least

    @classmethod
    def parse(
        cls, device: str | None, min_memory: str | None, compute_capability: str | None
    ) -> Requirements | None:
        """From `nexus store`'s options; None when none is given. UsageError naming a bad one."""
        if device is None and min_memory is None and compute_capability is None:
            return None
        if device is not None and device not in DEVICES:
            raise UsageError(f"--requires {device}: the one device a version can require is cuda.")
        memory = None
        if min_memory is not None:
            try:
                memory = parse_size(min_memory)
            except ValueError as exc:
                raise UsageError(f"--min-memory: {exc}") from None
        capability = None
        if compute_capability is not None:
            found = re.fullmatch(r"(\d+)\.(\d+)", compute_capability.strip())
            if found is None:
                raise UsageError(
                    f"--compute-capability {compute_capability}: give MAJOR.MINOR, e.g. 8.0."
                )
            capability = (int(found[1]), int(found[2]))
            device = CUDA  # a compute capability is a GPU's
        return cls(device, memory, capability)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.device:
            data["device"] = self.device
        if self.min_memory:
            data["min_memory"] = self.min_memory
        if self.compute_capability:
            data["compute_capability"] = ".".join(map(str, self.compute_capability))
        return data

    @classmethod
    def from_json(cls, data: Any) -> Requirements:
        """An entry's `requires`, read leniently: what cannot be read is not required."""
        if not isinstance(data, dict):
            return cls()
        capability = None
        found = re.fullmatch(r"(\d+)\.(\d+)", str(data.get("compute_capability") or ""))
        if found:
            capability = (int(found[1]), int(found[2]))
        memory = data.get("min_memory")
        return cls(
            device=data.get("device") if data.get("device") in DEVICES else None,
            min_memory=memory if isinstance(memory, int) and memory > 0 else None,
            compute_capability=capability,
        )

    def describe(self) -> str:
        """'cuda, 16.0 GiB of memory, compute capability 8.0 or newer'; 'any machine'."""
        parts = []
        if self.device:
            parts.append(self.device)
        if self.min_memory:
            parts.append(f"{human_size(self.min_memory)} of memory")
        if self.compute_capability:
            major, minor = self.compute_capability
            parts.append(f"compute capability {major}.{minor} or newer")
        return ", ".join(parts) or "any machine"


@dataclass(frozen=True)
class Machine:
    """What one device of this machine offers."""

    device: str  # "cpu", "cuda", "cuda:1"
    memory: int | None
    compute_capability: tuple[int, int] | None = None

    @classmethod
    def probe(cls, device: str) -> Machine:
        """The device as torch sees it (a GPU's memory and capability), or the CPU's RAM."""
        if device.startswith(CUDA):
            import torch

            if torch.cuda.is_available():
                index = int(device.partition(":")[2] or 0)
                properties = torch.cuda.get_device_properties(index)
                capability = (int(properties.major), int(properties.minor))
                return cls(device, int(properties.total_memory), capability)
            return cls("cpu", machine_memory())
        return cls("cpu", machine_memory())


def unmet(requirements: Requirements, machine: Machine, label: str) -> str | None:
    """Why `label` cannot run on `machine` (one sentence), or None when it can."""
    if requirements.device == CUDA and not machine.device.startswith(CUDA):
        return f"{label} requires a CUDA GPU; this server runs on the CPU"
    needed, has = requirements.compute_capability, machine.compute_capability
    if needed and has and has < needed:
        need, have = ".".join(map(str, needed)), ".".join(map(str, has))
        return f"{label} requires compute capability {need} or newer; this GPU has {have}"
    if requirements.min_memory and machine.memory and machine.memory < requirements.min_memory:
        what = "this GPU has" if machine.device.startswith(CUDA) else "this machine has"
        return (
            f"{label} requires {human_size(requirements.min_memory)} of memory; "
            f"{what} {human_size(machine.memory)}"
        )
    return None


def machine_memory() -> int | None:
    """The machine's RAM, in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
