"""A string model served through a handler that declares its signature: BYTES in, BYTES
and INT32 out (`NEXUS_HANDLER=tests.harness.text:ShoutHandler`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

HANDLER = "tests.harness.text:ShoutHandler"


class ShoutHandler:
    """Each text upper-cased, with its length in bytes; a batch of rows at a time."""

    signature: ClassVar[dict[str, Any]] = {
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [
            {"name": "SHOUT", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "LENGTH", "datatype": "INT32", "shape": [-1, 1]},
        ],
    }

    def load(self, path: Path, device: str) -> None:
        self.suffix = path.read_bytes().strip()  # the stored "model": what it appends

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = inputs["TEXT"]
        shout = np.empty(texts.shape, dtype=object)
        lengths = np.zeros(texts.shape, dtype=np.int32)
        for index, text in np.ndenumerate(texts):
            value = text if isinstance(text, bytes) else str(text).encode()
            shout[index] = value.decode().upper().encode() + self.suffix
            lengths[index] = len(value)
        return {"SHOUT": shout, "LENGTH": lengths}
