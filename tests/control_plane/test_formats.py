"""Format detection from bytes, on real files written by torch and onnx."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

from control_plane.core.formats import detect_format
from tests.harness.models import make_onnx, make_state_dict, make_torchscript


def test_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    make_torchscript(path)
    assert detect_format(path) == "torchscript"


def test_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    make_state_dict(path)
    assert detect_format(path) == "torch"


def test_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    make_onnx(path)
    assert detect_format(path) == "onnx"


def test_safetensors(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    assert detect_format(path) == "safetensors"


def test_plain_pickle(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert detect_format(path) == "pickle"


@pytest.mark.parametrize("data", [b"", b"hello world", b"PK\x03\x04not a zip"])
def test_unknown(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(data)
    assert detect_format(path) == "unknown"
