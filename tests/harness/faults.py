"""A fault-injecting handler: each version's behaviour is written in its own bytes.

A stored "model" is a small JSON file, so one handler serves every version and a
test says what a version does by what it stores:

    {"name": "v2", "batch_ms": 1, "delay_ms": 200, "fail_every": 5, "fail_load": "why"}

`fail_every: 5` fails every fifth item (20%), `delay_ms` adds to each batch,
`fail_load` makes loading raise. Outputs name the version that computed them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from control_plane import ModelEntry, Registry

HANDLER = "tests.harness.faults:FaultInjectingModel"


class FaultInjectingModel:
    def load(self, path: Path, device: str) -> None:
        spec = json.loads(Path(path).read_text())
        if spec.get("fail_load"):
            raise RuntimeError(spec["fail_load"])
        self.name = str(spec["name"])
        self.seconds = (float(spec.get("batch_ms", 1)) + float(spec.get("delay_ms", 0))) / 1000
        self.fail_every = int(spec.get("fail_every", 0))
        self.example = {"x": 1}
        self._items = 0

    def preprocess(self, item: Any) -> Any:
        self._items += 1
        if self.fail_every and self._items % self.fail_every == 0:
            raise ValueError("injected fault")
        return item

    def predict(self, inputs: list[Any]) -> list[Any]:
        time.sleep(self.seconds)
        return [{"version": self.name, "echo": item} for item in inputs]


def store_version(repo: Path, model_name: str = "svc", **spec: Any) -> ModelEntry:
    """Store a version of `model_name` whose behaviour is `spec`, at a new commit."""
    subprocess.run(
        ["git", "commit", "-q", "--allow-empty", "-m", f"train {spec['name']}"],
        cwd=repo,
        check=True,
    )
    path = repo.parent / f"{spec['name']}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    return Registry(repo).store(path, model_name).entry
