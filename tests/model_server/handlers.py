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


class SlowPid(SlowEcho):
    """SlowEcho that says which process answered and when it started and ended the batch."""

    def predict(self, inputs: list[Any]) -> list[Any]:
        start = time.time()
        time.sleep(self.seconds)
        return [{"pid": os.getpid(), "start": start, "end": time.time()} for _ in inputs]


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


def store_plan(repo: Path, plan: dict[str, Any], model: str) -> str:
    """A new commit (the training code changed) and `plan` stored as its version of `model`
    (a `Hostile` model); its commit."""
    import json

    from control_plane import Registry
    from tests.harness.repos import commit_all

    (repo / "train.py").write_text(f"# trains a model that does {plan}\n")
    commit_all(repo, f"train {plan['do']}")
    path = repo.parent / "plan.json"
    path.write_text(json.dumps(plan))
    return Registry(repo).store(path, model).entry.commit_hash


class Hostile:
    """A model whose stored file (JSON) says what its code attempts on every batch: the
    hostile models of the confinement tests. `{"do": "echo"}` is a well-behaved version."""

    def load(self, path: Path, device: str) -> None:
        import json

        self.plan = json.loads(path.read_text())

    def predict(self, inputs: list[Any]) -> list[Any]:
        import ctypes
        import socket
        import subprocess

        plan, do = self.plan, self.plan["do"]
        if do == "connect":
            with socket.create_connection(("127.0.0.1", plan["port"]), timeout=2) as sock:
                sock.sendall(b"stolen")
        elif do == "read":
            return [Path(target).read_text() for target in plan["paths"] for _ in inputs][
                : len(inputs)
            ]
        elif do == "write":
            Path(plan["path"]).write_text("written by a model")
        elif do == "shell":
            subprocess.run(["/bin/sh", "-c", f"touch {plan['marker']}"], check=True)
        elif do == "fork":
            while True:
                os.fork()
        elif do == "allocate":
            hoard = bytearray(plan["bytes"])
            hoard[-1] = 1
        elif do == "segfault" or (
            do == "segfault_on_request" and any("crash" in i for i in inputs)
        ):
            ctypes.string_at(0)
        elif do == "hang":
            time.sleep(3600)
        return [{"echo": item, "pid": os.getpid()} for item in inputs]
