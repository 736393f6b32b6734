"""Build the demo workspace that `make up` serves: its own Git repo with one stored model.

    python -m examples.demo_workspace demo

Idempotent: a second run finds the stored model and does nothing. The model is
a small TorchScript MLP (4 inputs -> 3 scores), built in well under a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODEL_NAME = "demo"

TRAIN_SCRIPT = '''"""The demo's "training": a small seeded MLP, exported as TorchScript."""

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
).eval()
torch.jit.script(model).save("model.pt")
'''


def git(workspace: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workspace, check=True, stdout=subprocess.DEVNULL)


def ensure_repo(workspace: Path) -> None:
    workspace.mkdir(exist_ok=True)
    if (workspace / ".git").exists():
        return
    git(workspace, "init", "-q")
    git(workspace, "config", "user.name", "NexusML demo")
    git(workspace, "config", "user.email", "demo@nexusml.invalid")
    (workspace / "train.py").write_text(TRAIN_SCRIPT)
    (workspace / ".gitignore").write_text("model.pt\n.nexus/\n")
    git(workspace, "add", "train.py", ".gitignore")
    git(workspace, "commit", "-q", "-m", "Demo training script")


def main(workspace: Path) -> None:
    from control_plane import Registry

    ensure_repo(workspace)
    registry = Registry(workspace)
    stored = registry.list(MODEL_NAME)
    if stored and registry.backend.exists(stored[0].storage_uri):
        print(f"demo workspace ready: {stored[0].label} is stored in {workspace}/")
        return
    subprocess.run([sys.executable, "train.py"], cwd=workspace, check=True)
    result = registry.store(workspace / "model.pt", MODEL_NAME, message="demo model")
    git(workspace, "add", ".nexus_meta.json")
    git(workspace, "commit", "-q", "-m", f"Store {result.entry.label}")
    print(f"demo workspace ready: stored {result.entry.label} in {workspace}/")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo").resolve())
