"""Shared memory between the server and one worker: a batch's arrays, written once.

Each worker has two arenas, an inbox (the server writes a batch's inputs) and an outbox
(the worker writes the outputs). An arena is an anonymous `memfd` mapped by both sides:
no name in /dev/shm (so no path the confined worker could reach, and nothing left behind
by a crash), grown by whichever side writes (`ftruncate`, then both map the new size).
Only one batch is in a worker at a time, so each arena is used from offset 0 every batch.

Arrays travel as descriptors (name, datatype, shape, offset, size) in the JSON message
and bytes in the arena. What a worker sends back is not trusted: every descriptor is
checked against the arena before a byte is read, and nothing from a worker is unpickled.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from control_plane.core.invoke import NUMPY_DATATYPES, datatype_of, numpy_dtype
from model_server.errors import WorkerProtocolError
from nexus_common import v2wire

ALIGN = 64  # each array starts on a cache line (and a SIMD-friendly boundary)
MIN_SIZE = 1 << 20
BYTES = "BYTES"

Descriptor = dict[str, Any]  # {"name", "datatype", "shape", "offset", "size"}


class Arena:
    """One memfd, mapped; `ensure` grows it (the size is the file's, so both sides agree)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: mmap.mmap | None = None
        self._size = 0
        self.remap()

    @classmethod
    def create(cls, label: str) -> Arena:
        fd = os.memfd_create(f"nexus-{label}", os.MFD_CLOEXEC)
        os.ftruncate(fd, MIN_SIZE)
        return cls(fd)

    @property
    def size(self) -> int:
        return self._size

    @property
    def buffer(self) -> mmap.mmap:
        assert self._map is not None
        return self._map

    def remap(self) -> None:
        """Map the file at its current size (the other side may have grown it)."""
        size = os.fstat(self.fd).st_size
        if size == self._size and self._map is not None:
            return
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self.fd, size) if size else None
        self._size = size

    def ensure(self, needed: int) -> None:
        """At least `needed` bytes, doubling, so a growing batch size grows it a few times."""
        self.remap()
        if needed <= self._size:
            return
        os.ftruncate(self.fd, max(needed, 2 * self._size, MIN_SIZE))
        self.remap()

    def view(self, offset: int, size: int) -> memoryview:
        return memoryview(self.buffer)[offset : offset + size]

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # an array still points into it
                self._map.close()
            self._map = None
        os.close(self.fd)


def layout(sizes: list[int], start: int = 0) -> tuple[list[int], int]:
    """Aligned offsets for blocks of these sizes, and the end."""
    offsets = []
    position = start
    for size in sizes:
        position = -(-position // ALIGN) * ALIGN
        offsets.append(position)
        position += size
    return offsets, position


def write_arrays(arena: Arena, arrays: Mapping[str, np.ndarray]) -> list[Descriptor]:
    """Copy named batch arrays into the arena; their descriptors."""
    return stack_into(arena, {name: [array] for name, array in arrays.items()}, stacked=False)


def stack_into(
    arena: Arena, columns: Mapping[str, list[np.ndarray]], *, stacked: bool = True
) -> list[Descriptor]:
    """Each input's item arrays stacked straight into the arena, the one copy into the
    batch (`stacked=False`: each column is one array, the whole batch, copied as it is).
    BYTES columns are packed (length-prefixed elements) instead."""
    blocks: list[tuple[str, str, tuple[int, ...], bytes | None, int]] = []
    for name, items in columns.items():
        first = items[0]
        shape = (len(items), *first.shape) if stacked else tuple(first.shape)
        datatype = datatype_of(first)
        if datatype == BYTES:
            raw = v2wire.pack_bytes(name, [e for item in items for e in item.reshape(-1)])
            blocks.append((name, datatype, shape, raw, len(raw)))
        else:
            size = math.prod(shape) * numpy_dtype(datatype).itemsize
            blocks.append((name, datatype, shape, None, size))
    offsets, end = layout([block[4] for block in blocks])
    arena.ensure(end)
    descriptors: list[Descriptor] = []
    for (name, datatype, shape, packed, size), offset in zip(blocks, offsets, strict=True):
        if packed is not None:
            arena.view(offset, size)[:] = packed
        else:
            out = np.ndarray(shape, numpy_dtype(datatype), arena.buffer, offset)
            if stacked:
                np.stack(columns[name], out=out)
            else:
                out[...] = columns[name][0]
        descriptors.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(shape),
                "offset": offset,
                "size": size,
            }
        )
    return descriptors


def read_arrays(
    arena: Arena, descriptors: Any, *, copy: bool, role: str = "output"
) -> dict[str, np.ndarray]:
    """The arrays the descriptors name, each checked against the arena first (a worker's
    descriptors are not trusted); copied out when the arena will be reused (`copy`),
    else writable views into it."""
    arena.remap()
    if not isinstance(descriptors, list):
        raise WorkerProtocolError(f"the worker sent {role}s that are not a list")
    arrays: dict[str, np.ndarray] = {}
    for descriptor in descriptors:
        name, datatype, shape, offset, size = _checked(descriptor, arena.size, role)
        if datatype == BYTES:
            raw = bytes(arena.view(offset, size))
            tensor = v2wire.Tensor(name, list(shape), BYTES, raw=raw)
            try:
                v2wire.check_raw(tensor, role)
            except v2wire.V2Error as exc:
                raise WorkerProtocolError(str(exc)) from None
            array = np.empty(math.prod(shape), dtype=object)
            array[:] = v2wire.unpack_bytes(raw)
            arrays[name] = array.reshape(shape)
            continue
        view = np.ndarray(shape, numpy_dtype(datatype), arena.buffer, offset)
        arrays[name] = view.copy() if copy else view
    return arrays


def _checked(
    descriptor: Any, arena_size: int, role: str
) -> tuple[str, str, tuple[int, ...], int, int]:
    try:
        name = str(descriptor["name"])
        datatype = str(descriptor["datatype"])
        shape = tuple(int(d) for d in descriptor["shape"])
        offset, size = int(descriptor["offset"]), int(descriptor["size"])
    except (KeyError, TypeError, ValueError):
        raise WorkerProtocolError(f"the worker sent a malformed {role} descriptor") from None
    if datatype != BYTES and datatype not in _KNOWN:
        raise WorkerProtocolError(f"the worker sent {role} '{name}' of datatype {datatype!r}")
    if any(d < 0 for d in shape) or offset < 0 or size < 0 or offset + size > arena_size:
        raise WorkerProtocolError(f"the worker sent {role} '{name}' outside shared memory")
    if datatype != BYTES and size != math.prod(shape) * numpy_dtype(datatype).itemsize:
        raise WorkerProtocolError(
            f"the worker sent {role} '{name}' of {size} bytes for shape {list(shape)}"
        )
    return name, datatype, shape, offset, size


_KNOWN = frozenset(NUMPY_DATATYPES.values())
