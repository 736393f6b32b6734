"""Recognise a model file's format from its bytes, without unpickling anything."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

TORCHSCRIPT = "torchscript"
TORCH = "torch"  # torch.save zip archive: a state_dict or a pickled module
ONNX = "onnx"
SAFETENSORS = "safetensors"
PICKLE = "pickle"  # a legacy torch.save or a plain pickle
UNKNOWN = "unknown"

_ONNX_MODEL_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def detect_format(path: Path) -> str:
    """One of the constants above; never raises for an unreadable or odd file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
        size = path.stat().st_size
    except OSError:
        return UNKNOWN
    if head.startswith(b"PK\x03\x04"):
        return _zip_format(path)
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= size - 8 and head[8:9] == b"{":
            return SAFETENSORS
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return PICKLE
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in _ONNX_MODEL_TAGS:
        return ONNX
    return UNKNOWN


def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return UNKNOWN
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        return TORCHSCRIPT
    if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return TORCH
    return UNKNOWN
