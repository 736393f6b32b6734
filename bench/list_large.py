"""`nexus list` on a metadata file of many entries, run as the real command.

    python bench/list_large.py [--entries 100000]

Target: under 0.5 s for 100,000 entries (the whole process), warm and in a fresh clone's
second run.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import best_of, save, table
from tests.harness.repos import git_repo


def make_metadata(entries: int, models: int = 50, history: bool = False) -> bytes:
    """`entries` versions spread over `models` models (with a `stored` event each, and the
    stage events of the last ones, when `history`)."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(entries):
        commit = hashlib.sha1(str(i).encode()).hexdigest()
        name = f"model_{i % models}"
        when = (start + timedelta(minutes=i)).isoformat(timespec="seconds")
        # the last two versions of each model hold production and staging
        stage = (
            "production"
            if entries - 2 * models <= i < entries - models
            else ("staging" if i >= entries - models else ("archived", None)[i % 2])
        )
        row = {
            "commit_hash": commit,
            "model_name": name,
            "storage_uri": f"{name}/{commit}.pt",
            "file_size": 1000 + i,
            "timestamp": when,
            "is_latest": i >= entries - models,
            "version": 1 + i // models,
            "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
            "format": "torchscript",
            "metrics": {"accuracy": (i % 1000) / 1000},
            "tags": {"team": "vision" if i % 3 else "nlp"},
            "stage": stage,
            "status": ("approved", "pending_review")[i % 2],
        }
        if history:
            events = [{"what": "stored", "from": None, "to": 1 + i // models, "who": "bench",
                       "when": when, "seq": 2 * i + 1}]  # fmt: skip
            if stage in ("production", "staging"):
                events.append({"what": "stage", "from": None, "to": stage, "who": "bench",
                               "when": when, "seq": 2 * i + 2})  # fmt: skip
            row["history"] = events
        rows.append(row)
    return orjson.dumps(
        {"schema_version": 1, "models": rows},
        option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    nexus = str(Path(sys.executable).with_name("nexus"))
    # As after a regular (non-editable) install: byte-code compiled, so start-up is not
    # charged for compiling the package on every run (PYTHONDONTWRITEBYTECODE may be set).
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "control_plane")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = git_repo(Path(tmp) / "repo")
        data = make_metadata(args.entries)
        (repo / ".nexus_meta.json").write_bytes(data)
        (repo / ".nexus").mkdir()  # as after a first `nexus store`: where the list index lives
        index = repo / ".nexus" / "list-index"

        def run(*extra: str) -> None:
            subprocess.run([nexus, *extra], cwd=repo, check=True, stdout=subprocess.DEVNULL)

        def cold(i: int) -> None:
            index.unlink(missing_ok=True)
            (repo / ".nexus" / "list-rendered").unlink(missing_ok=True)
            run("list")

        def fresh_clone_first_run() -> None:
            # A fresh clone has no .nexus/: the first list may build the index (untimed); the
            # timed second one shows whether it did.
            shutil.rmtree(repo / ".nexus", ignore_errors=True)
            run("list")

        startup = best_of(args.runs, lambda i: run("--help"))
        cold_listing = best_of(args.runs, cold)
        listing = best_of(args.runs, lambda i: run("list"))
        as_json = best_of(args.runs, lambda i: run("list", "--json"))
        one_model = best_of(args.runs, lambda i: run("list", "--model-name", "model_7"))
        filtered = best_of(
            args.runs,
            lambda i: run(
                "list",
                "--stage",
                "production",
                "--metric",
                "accuracy>=0.5",
                "--tag",
                "team=vision",
                "--sort",
                "accuracy",
                "--limit",
                "20",
            ),
        )
        fresh_second = best_of(args.runs, lambda i: run("list"), before=fresh_clone_first_run)
    rows = [
        ["nexus --help (start-up floor)", f"{startup:.3f}"],
        ["nexus list, no index yet (parse + build it and the text)", f"{cold_listing:.3f}"],
        ["nexus list (replays the rendered text)", f"{listing:.3f}"],
        ["nexus list in a fresh clone (no .nexus/), second run", f"{fresh_second:.3f}"],
        ["nexus list --json", f"{as_json:.3f}"],
        ["nexus list --model-name (2% of rows)", f"{one_model:.3f}"],
        ["nexus list --stage --metric --tag --sort --limit", f"{filtered:.3f}"],
    ]
    print(f"{args.entries} entries ({len(data) / 2**20:.1f} MiB file), best of {args.runs}")
    print(table(["command", "seconds"], rows))
    path = save(
        "list_large",
        {
            "entries": args.entries,
            "seconds": {
                "startup": startup,
                "list": listing,
                "fresh_clone_second": fresh_second,
                "json": as_json,
                "one": one_model,
                "filtered": filtered,
            },
            "target_seconds": 1.0,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
