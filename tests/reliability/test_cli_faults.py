"""`nexus` as real processes under faults: kill -9 mid-store, ten stores at once, a full
disk while loading, and tampered paths. After each: the metadata parses, nothing is half
listed, every listed version verifies, and a retry succeeds."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import commit_all, git
from tests.reliability.stack import ROOT, listed, nexus, process_env


def _wait_until_stopped(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    stat = Path(f"/proc/{proc.pid}/stat")
    while time.monotonic() < deadline:
        assert proc.poll() is None, "nexus ended before reaching the point"
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.02)
    raise AssertionError("nexus never reached the point")


@pytest.mark.parametrize("point", ["upload", "metadata", "index"])
def test_kill_9_during_store_loses_nothing_and_a_retry_succeeds(
    repo: Path, tmp_path: Path, point: str
) -> None:
    first = tmp_path / "v1.bin"
    first.write_bytes(os.urandom(100_000))
    nexus(repo, "store", str(first), "m")
    before = (repo / ".nexus_meta.json").read_bytes()
    (repo / "train.py").write_text("print('v2')\n")
    commit_all(repo, "train v2")
    second = tmp_path / "v2.bin"
    second.write_bytes(os.urandom(8 * 1024 * 1024))

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.stop_at", point, "store", str(second), "m"],
        cwd=repo,
        env=process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_until_stopped(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    versions = listed(repo)  # the file parses and the listing agrees with it
    if point == "index":  # the rename happened: v2 is fully recorded, the index catches up
        assert sorted(v["version"] for v in versions) == [1, 2]
    else:  # nothing of v2 is listed and the file is byte for byte what it was
        assert (repo / ".nexus_meta.json").read_bytes() == before
        assert [v["version"] for v in versions] == [1]
    assert "versions verified" in nexus(repo, "verify").stdout

    again = nexus(repo, "store", str(second), "m")  # the lock died with the process
    assert "Traceback" not in again.stderr
    assert sorted(v["version"] for v in listed(repo)) == [1, 2]
    nexus(repo, "load", "latest", str(tmp_path / "out.bin"), "-m", "m")
    assert (tmp_path / "out.bin").read_bytes() == second.read_bytes()
    assert not list(repo.glob(".nexus_meta.json.*.tmp"))  # the next write swept the litter
    assert "2 of 2 versions verified" in nexus(repo, "verify").stdout


def test_ten_concurrent_stores_all_land_and_same_key_writers_never_overwrite(
    repo: Path, tmp_path: Path
) -> None:
    files = []
    for i in range(10):
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(os.urandom(512 * 1024))
        files.append(path)
    with ThreadPoolExecutor(10) as pool:
        stores = list(
            pool.map(lambda i: nexus(repo, "store", str(files[i]), f"model_{i}"), range(10))
        )
    assert all(done.returncode == 0 for done in stores)
    versions = listed(repo)
    assert sorted(str(v["model_name"]) for v in versions) == [f"model_{i}" for i in range(10)]
    assert all(v["is_latest"] for v in versions)

    # Ten processes store other bytes as the same model at the same commit: one object key.
    with ThreadPoolExecutor(10) as pool:
        rivals = list(
            pool.map(lambda i: nexus(repo, "store", str(files[i]), "shared", code=None), range(10))
        )
    winners = [i for i, done in enumerate(rivals) if done.returncode == 0]
    assert len(winners) == 1, [done.stderr for done in rivals]
    for done in rivals:  # each loser is told why: recorded by now (1), or still uploading (3)
        if done.returncode == 1:
            assert "already stored with other bytes" in done.stderr
        elif done.returncode != 0:
            assert done.returncode == 3
            assert "will not be overwritten" in done.stderr
            assert "another store is writing this version now" in done.stderr
    nexus(repo, "load", "latest", str(tmp_path / "shared.bin"), "-m", "shared")
    assert (tmp_path / "shared.bin").read_bytes() == files[winners[0]].read_bytes()
    assert "11 of 11 versions verified" in nexus(repo, "verify").stdout


def _small_disk() -> None:
    """In the child: the kernel refuses any write past 1 MB (EFBIG, as a full disk's
    ENOSPC), without the signal that would otherwise kill the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_a_full_disk_while_loading_leaves_nothing_at_dest(repo: Path, tmp_path: Path) -> None:
    model = tmp_path / "big.bin"
    model.write_bytes(os.urandom(3_000_000))
    nexus(repo, "store", str(model), "m")
    dest = tmp_path / "new" / "folders" / "model.bin"
    failed = nexus(repo, "load", "latest", str(dest), "-m", "m", code=3, preexec_fn=_small_disk)
    assert f"Error: cannot write to {dest.parent}: File too large." in failed.stderr
    assert "free space there" in failed.stderr
    assert not (tmp_path / "new").exists()  # no file, no temp file, no folders it made
    nexus(repo, "load", "latest", str(dest), "-m", "m")
    assert dest.read_bytes() == model.read_bytes()


def test_paths_that_try_to_leave_are_refused(repo: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(1000))
    for name in ("../evil", "a/../../b", "/etc/passwd", "..", "x\\..\\y"):
        refused = nexus(repo, "store", str(model), name, code=2)
        assert "is not a valid model name" in refused.stderr
    for ref in ("../../etc/passwd", "/etc/passwd", "HEAD~1/../../x"):
        refused = nexus(repo, "load", ref, str(tmp_path / "x.bin"), code=1)
        assert refused.stderr.startswith("Error: ")
    nexus(repo, "store", str(model), "m")
    commit_all(repo, "record m")
    meta = repo / ".nexus_meta.json"
    original = json.loads(meta.read_text())
    outside = tmp_path / "outside"
    outside.mkdir()
    for uri in ("../../../outside/stolen.bin", "/etc/passwd", "m/../../../x.bin"):
        tampered = json.loads(json.dumps(original))
        tampered["models"][0]["storage_uri"] = uri
        meta.write_text(json.dumps(tampered))
        dest = tmp_path / "dest"
        dest.mkdir(exist_ok=True)
        refused = nexus(repo, "load", "latest", str(dest), "-m", "m", code=None)
        assert refused.returncode != 0
        assert refused.stderr.startswith("Error: ")
        assert not any(dest.iterdir())
        assert not any(outside.iterdir())
        assert not (tmp_path / "x.bin").exists()
    git(repo, "checkout", "--", ".nexus_meta.json")
    assert ROOT.is_dir()
