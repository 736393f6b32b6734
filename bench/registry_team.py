"""A registry a team shares: merging big branches, and garbage collection of a big store.

    python bench/registry_team.py [--versions 10000] [--objects 100000]

1. `git merge` (the whole process: Git plus nexus's merge driver) of two branches that
   each stored `--versions` versions across 100 models since they forked, so every one
   of them collides in number with the other side's and is renumbered. Target: < 2 s.
2. `nexus gc` (the whole process) over a local store of `--objects` objects under 50
   models, two thirds of them referenced by the metadata, all older than the grace period:
   the dry run, and the run that deletes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import save, table
from tests.harness.repos import git_repo

MODELS = 100


def version(side: str, i: int, start: datetime, number: int) -> dict[str, Any]:
    """One stored version as `nexus store` writes it, with its history."""
    commit = hashlib.sha1(f"{side}{i}".encode()).hexdigest()
    model = f"model_{i % MODELS}"
    when = (start + timedelta(seconds=i)).isoformat(timespec="microseconds")
    events = [
        {"what": "stored", "from": None, "to": number, "who": side, "when": when, "seq": 3 * i},
        {
            "what": "status",
            "from": None,
            "to": "pending_review",
            "who": side,
            "when": when,
            "seq": 3 * i + 1,
        },
        {"what": "latest", "from": False, "to": True, "who": side, "when": when, "seq": 3 * i + 2},
    ]
    return {
        "commit_hash": commit,
        "model_name": model,
        "storage_uri": f"{model}/{commit}.pt",
        "file_size": 1000 + i,
        "timestamp": (start + timedelta(seconds=i)).isoformat(timespec="seconds"),
        "is_latest": False,
        "sha256": hashlib.sha256(commit.encode()).hexdigest(),
        "format": "torchscript",
        "metrics": {"accuracy": (i % 1000) / 1000},
        "status": "pending_review",
        "version": number,
        "history": events,
    }


def branch_file(side: str, count: int, start: datetime) -> bytes:
    models = [version(side, i, start, 1 + i // MODELS) for i in range(count)]
    for entry in models[-MODELS:]:
        entry["is_latest"] = True
    return orjson.dumps({"schema_version": 1, "models": models}, option=orjson.OPT_INDENT_2)


def run(repo: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=repo, check=True, capture_output=True)
    return time.perf_counter() - started


def bench_merge(root: Path, count: int) -> dict[str, Any]:
    nexus = str(Path(sys.executable).with_name("nexus"))
    repo = git_repo(root / "merge")
    subprocess.run([nexus, "init"], cwd=repo, check=True, capture_output=True)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "init")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fork = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    for side, offset in (("a", 0), ("b", 1)):
        run(repo, "git", "checkout", "-q", "-b", side, fork)
        later = start + timedelta(microseconds=offset)
        (repo / ".nexus_meta.json").write_bytes(branch_file(side, count, later))
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", f"{side} stores {count}")
    run(repo, "git", "checkout", "-q", "a")
    seconds = run(repo, "git", "merge", "-q", "--no-edit", "b")
    merged = orjson.loads((repo / ".nexus_meta.json").read_bytes())
    listed = time.perf_counter()
    subprocess.run([nexus, "list"], cwd=repo, check=True, capture_output=True)
    return {
        "versions_per_branch": count,
        "git_merge_s": seconds,
        "merged_versions": len(merged["models"]),
        "renumbered": sum(
            1 for m in merged["models"] for e in m["history"] if e["what"] == "version"
        ),
        "list_after_merge_s": time.perf_counter() - listed,
    }


def bench_gc(root: Path, objects: int) -> dict[str, Any]:
    nexus = str(Path(sys.executable).with_name("nexus"))
    repo = git_repo(root / "gc")
    store = repo / ".nexus" / "store"
    past = time.time() - 30 * 86400
    models = []
    for i in range(objects):
        commit = hashlib.sha1(str(i).encode()).hexdigest()
        model = f"model_{i % 50}"
        path = store / model / f"{commit}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (past, past))
        if i % 3:  # two in three referenced; every model known
            models.append(
                {
                    "commit_hash": commit,
                    "model_name": model,
                    "storage_uri": f"{model}/{commit}.pt",
                    "file_size": 1,
                    "timestamp": "2026-01-01T00:00:00+00:00",
                    "is_latest": i >= objects - 100,
                    "version": 1 + i // 100,
                }
            )
    (repo / ".nexus_meta.json").write_bytes(orjson.dumps({"models": models}))
    run(repo, "git", "add", ".nexus_meta.json")
    run(repo, "git", "commit", "-qm", "metadata")
    dry = run(repo, nexus, "gc", "--grace", "7d")
    done = run(repo, nexus, "gc", "--grace", "7d", "--yes")
    left = sum(1 for _ in store.rglob("*.pt"))
    return {"objects": objects, "dry_run_s": dry, "delete_s": done, "left": left}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        merge = bench_merge(Path(tmp), args.versions)
        collected = bench_gc(Path(tmp), args.objects)
    rows = [
        [
            f"git merge, {args.versions:,} new versions on each branch (all renumbered)",
            f"{merge['git_merge_s']:.2f}",
            "< 2",
        ],
        [
            "nexus list of the merged file (builds its index)",
            f"{merge['list_after_merge_s']:.2f}",
            "",
        ],
        [f"nexus gc (dry run), {args.objects:,} objects", f"{collected['dry_run_s']:.2f}", ""],
        [
            f"nexus gc --yes, deletes {args.objects - collected['left']:,}",
            f"{collected['delete_s']:.2f}",
            "",
        ],
    ]
    print(table(["run", "seconds", "target"], rows))
    print(save("registry_team", {"merge": merge, "gc": collected}))


if __name__ == "__main__":
    main()
