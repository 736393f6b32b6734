"""A handler used by the tests: a state dict needs code to become a model."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from tests.harness.models import IN_FEATURES, TinyMLP


class StateDictMLP:
    def load(self, path: Path, device: str) -> None:
        self.model = TinyMLP()
        self.model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        self.model.eval()

    def preprocess(self, item: Any) -> torch.Tensor:
        values = item["features"]
        if len(values) != IN_FEATURES:
            raise ValueError(f"need {IN_FEATURES} features, got {len(values)}")
        return torch.tensor(values, dtype=torch.float32)

    def predict(self, inputs: list[torch.Tensor]) -> list[list[float]]:
        with torch.inference_mode():
            return self.model(torch.stack(inputs)).tolist()


class ErrorShapedOutputs:
    """A model whose real outputs carry an "error" field (e.g. a regression's error bar)."""

    def load(self, path: Path, device: str) -> None:
        self.path = path

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        return [{"value": item.get("x", 0), "error": 0.25} for item in inputs]


class SlowEcho:
    """Echoes each item after sleeping per batch: a model slow enough to keep a queue."""

    def load(self, path: Path, device: str) -> None:
        self.seconds = float(os.environ.get("SLOW_ECHO_SECONDS", "0.2"))

    def predict(self, inputs: list[Any]) -> list[Any]:
        time.sleep(self.seconds)
        return list(inputs)


class DirectoryHandler:
    """Serves a directory model: a config and a vocabulary in separate files."""

    def load(self, path: Path, device: str) -> None:
        import json

        self.scale = json.loads((path / "config.json").read_text())["scale"]
        self.vocab = (path / "tokenizer" / "vocab.txt").read_text().split()

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [
            {"word": self.vocab[int(x) % len(self.vocab)], "scaled": x * self.scale} for x in inputs
        ]
