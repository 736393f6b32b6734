"""Confining a worker before the model's code runs: limits, Landlock, seccomp, and a log
line for each attempt the confinement refuses.

Order matters: resource limits first, then Landlock (it needs its own system calls), then
seccomp (last, so nothing it refuses is needed to set up the rest). The kernel enforces
all three for the rest of the process's life; the audit hook only says, in the log, what
the model's code tried (Python's audit events name the path, address or command) so a
refusal is not a bare "Operation not permitted".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_server.errors import ConfinementError
from model_server.workers import landlock, seccomp
from model_server.workers.spec import WorkerSpec

logger = logging.getLogger("nexus.worker")

# What the Python runtime and the libraries it loads read, besides the environment itself.
SYSTEM_READ = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo",
    "/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random",
    "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys/kernel/random/boot_id",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)  # fmt: skip
SYSTEM_WRITE = ("/dev/null", "/dev/zero")
# A GPU worker's devices and what CUDA reads to find them (docs/model-server.md).
CUDA_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-caps")
CUDA_READ = ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices", "/usr/local/cuda", "/opt")


def apply(spec: WorkerSpec) -> list[str]:
    """Confine this process as `spec` says; the layers now active, in words. A layer the
    kernel (or a container's own filter) refuses is skipped with a warning, not fatal:
    confinement is on where the kernel allows it."""
    active = [_limit(spec)]
    if not spec.confine:
        return active
    paths = readable(spec)  # before any layer: finding a handler's package reads folders
    try:
        seccomp.no_new_privileges()
    except ConfinementError as exc:
        logger.warning("%s: %s; the worker runs unconfined", spec.label, exc)
        return active
    abi = landlock.abi_version()
    if abi == 0:
        logger.warning("%s: no Landlock here: the worker can read any file", spec.label)
    else:
        try:
            handled = landlock.restrict(_rules(spec, paths), abi)
            active.append(f"landlock ABI {abi} ({', '.join(handled)})")
        except ConfinementError as exc:
            logger.warning("%s: %s: the worker can read any file", spec.label, exc)
    if not seccomp.supported():
        logger.warning("%s: no seccomp filter for this architecture", spec.label)
    else:
        try:
            seccomp.install()
            active.append("seccomp (no sockets, exec, processes, ptrace, mounts)")
        except ConfinementError as exc:
            logger.warning("%s: %s: the worker's system calls are not filtered", spec.label, exc)
    sys.addaudithook(_Watch(spec, paths).hook)
    return active


def _limit(spec: WorkerSpec) -> str:
    """Resource limits: open files, no core dumps, and (CPU) the address space."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec.open_files, spec.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    said = f"limits (open files {spec.open_files}"
    if spec.memory_bytes and not spec.device.startswith("cuda"):
        # CUDA reserves far more address space than it uses: a GPU worker has no AS limit
        resource.setrlimit(resource.RLIMIT_AS, (spec.memory_bytes, spec.memory_bytes))
        said += f", memory {spec.memory_bytes / 2**30:.1f} GiB"
    return said + ")"


def readable(spec: WorkerSpec) -> list[Path]:
    """What the worker may read: its version, the Python environment and the packages it
    runs, a handler's own package (a trusted pickle: the whole import path), the system's
    libraries."""
    paths = [Path(spec.path)]
    paths += {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for module in ("nexus_common", "control_plane", "model_server"):
        paths.append(Path(sys.modules[module].__path__[0]))
    if spec.handler:
        origin = _package_of(spec.handler.partition(":")[0])
        if origin is not None:
            paths.append(origin)
    if spec.trust_pickle:  # a trusted pickle imports its classes' modules, from anywhere
        paths += [Path(entry) for entry in sys.path if entry and os.path.isdir(entry)]
    paths += [Path(p) for p in SYSTEM_READ]
    paths.append(Path(f"/proc/{os.getpid()}"))
    if spec.device.startswith("cuda"):
        paths += [Path(p) for p in CUDA_READ]
    return paths


def _rules(spec: WorkerSpec, paths: list[Path]) -> Iterator[tuple[Path, int]]:
    for path in paths:
        yield path, landlock.READ
    for name in SYSTEM_WRITE:
        yield Path(name), landlock.READ | landlock.DEVICE
    yield Path(spec.tmpdir), landlock.WRITE
    if spec.device.startswith("cuda"):
        devices = [Path(p) for p in CUDA_DEVICES] + sorted(Path("/dev").glob("nvidia[0-9]*"))
        for device in devices:
            yield device, landlock.DEVICE


def _package_of(module: str) -> Path | None:
    """The file or folder of a module's top-level package, found without running it."""
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.origin else None


class _Watch:
    """An audit hook that says what the model's code tried that the confinement refuses."""

    def __init__(self, spec: WorkerSpec, paths: list[Path]) -> None:
        self._label = spec.label
        self._tmp = spec.tmpdir
        self._readable = tuple(str(p) for p in paths)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        said = self._refused(event, args)
        if said is not None:
            logger.warning("%s: the model's code tried to %s: refused (%s)", self._label, *said)

    def _refused(self, event: str, args: tuple[Any, ...]) -> tuple[str, str] | None:
        if event == "socket.__new__":
            return "open a network socket", "seccomp"
        if event == "socket.connect":
            return f"connect to {args[1]!r}", "seccomp"
        if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"):
            return f"run {args[0]!r}", "seccomp: no exec"
        if event in ("os.fork", "os.forkpty"):
            return "fork a process", "seccomp: no new processes"
        if event == "open" and isinstance(args[0], str | Path):
            return self._open(str(args[0]), args[1], args[2])
        return None

    def _open(self, path: str, mode: Any, flags: Any) -> tuple[str, str] | None:
        path = os.path.abspath(path)
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writes:
            if _beneath(path, (self._tmp, *SYSTEM_WRITE)):
                return None
            return f"write {path}", f"landlock: it writes only in {self._tmp}"
        allowed = (*self._readable, self._tmp, *SYSTEM_WRITE)
        if _beneath(path, allowed) or _beneath(os.path.realpath(path), allowed):
            return None  # (through a link: /proc/self/... is this process's own folder)
        return f"read {path}", "landlock: not among the files it may read"


def _beneath(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)
