"""Store and load a large file on the local provider, against cp + one hashlib pass.

    python bench/local_store.py [--size-mib 1024] [--runs 3]

Prints a table and writes bench/results/local_store.json. The floor is what any
design must do: copy the bytes (cp) and hash them once (hashlib.sha256).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, save, table
from control_plane import Registry
from control_plane.core.hashing import sha256_file
from tests.harness.repos import git_repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024

    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        root = Path(tmp)
        repo = git_repo(root / "repo")
        source = root / "model.bin"
        with source.open("wb") as fh:
            block = os.urandom(16 * 1024 * 1024)
            for _ in range(0, size, len(block)):
                fh.write(block[: min(len(block), size - fh.tell())])
        registry = Registry(repo)

        cp = best_of(
            args.runs, lambda i: subprocess.run(["cp", source, root / f"cp{i}"], check=True)
        )
        hashing = best_of(args.runs, lambda i: sha256_file(source))
        store = best_of(args.runs, lambda i: registry.store(source, f"model{i}"))
        load = best_of(
            args.runs, lambda i: registry.load("latest", root / f"out{i}", model_name=f"model{i}")
        )
        floor = cp + hashing
        rows = [
            ["cp (raw copy)", f"{cp:.3f}", f"{size / cp / 2**20:.0f}", ""],
            ["hashlib.sha256 pass", f"{hashing:.3f}", f"{size / hashing / 2**20:.0f}", ""],
            ["floor = cp + sha256", f"{floor:.3f}", f"{size / floor / 2**20:.0f}", "1.00x"],
            ["nexus store", f"{store:.3f}", f"{size / store / 2**20:.0f}", f"{store / floor:.2f}x"],
            [
                "nexus load (verified)",
                f"{load:.3f}",
                f"{size / load / 2**20:.0f}",
                f"{load / floor:.2f}x",
            ],
        ]
        print(f"local provider, {args.size_mib} MiB file, best of {args.runs}, page cache warm")
        print(table(["operation", "seconds", "MiB/s", "vs floor"], rows))
        path = save(
            "local_store",
            {
                "size_bytes": size,
                "runs": args.runs,
                "seconds": {"cp": cp, "sha256": hashing, "store": store, "load": load},
                "ratio_to_floor": {"store": store / floor, "load": load / floor},
                "target_ratio": 1.2,
            },
        )
        print(f"wrote {path}")
        shutil.rmtree(root / "repo")


def _row(name: str, seconds: float, size: int, floor: float | None) -> list[str]:
    ratio = f"{seconds / floor:.2f}x" if floor else ""
    return [name, f"{seconds:.3f}", f"{size / seconds / 2**20:.0f}", ratio]


if __name__ == "__main__":
    main()
