"""S3 and GCS misbehaving on the wire, through a fault-injecting forwarder in front of moto's
server and the GCS emulator: throttling, 5xx and connections dropped mid-transfer are
retried; when they never stop, the command says so in one sentence and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import commit_all
from tests.reliability.faulty_http import FaultyHttp, faulty_http
from tests.reliability.stack import listed, nexus


@pytest.fixture
def s3_repo(repo: Path, s3_bucket: str, moto_url: str) -> Iterator[tuple[Path, FaultyHttp]]:
    with faulty_http(moto_url) as (faults, url):
        (repo / ".nexusrc").write_text(
            f"provider: s3\nbucket: {s3_bucket}\nendpoint_url: {url}\nregion: us-east-1\n"
        )
        commit_all(repo, "configure nexus")
        yield repo, faults


@pytest.fixture
def gcs_repo(
    repo: Path, gcs_bucket: str, gcs_server: tuple[object, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, FaultyHttp]]:
    with faulty_http(gcs_server[1]) as (faults, url):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        (repo / ".nexusrc").write_text(f"provider: gcs\nbucket: {gcs_bucket}\n")
        commit_all(repo, "configure nexus")
        yield repo, faults


def _model(tmp_path: Path, size: int = 2 * 1024 * 1024) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(os.urandom(size))
    return path


def test_s3_throttling_and_dropped_downloads_are_retried(s3_repo, tmp_path: Path) -> None:
    repo, faults = s3_repo
    model = _model(tmp_path)
    throttled = faults.add("PUT", r"/model\.bin|/m/", "503", times=2)
    nexus(repo, "store", str(model), "m")
    assert throttled.injected == 2
    dropped = faults.add("GET", r"/m/[0-9a-f]{40}", "drop", times=2)
    nexus(repo, "load", "latest", str(tmp_path / "out.bin"), "-m", "m")
    assert dropped.injected == 2
    assert (tmp_path / "out.bin").read_bytes() == model.read_bytes()


def test_s3_throttling_that_never_stops_is_one_sentence(s3_repo, tmp_path: Path) -> None:
    repo, faults = s3_repo
    model = _model(tmp_path)
    faults.add("PUT", r"/m/", "503", times=-1)
    failed = nexus(repo, "store", str(model), "m", code=3)
    assert "(retried): SlowDown Please reduce your request rate." in failed.stderr
    assert not (repo / ".nexus_meta.json").exists() or listed(repo) == []
    faults.clear()
    nexus(repo, "store", str(model), "m")  # the retry succeeds
    faults.add("GET", r"/m/[0-9a-f]{40}", "drop", times=-1)
    dest = tmp_path / "out.bin"
    failed = nexus(repo, "load", "latest", str(dest), "-m", "m", code=3)
    assert "kept failing, retried: 1048576 read, but total bytes expected is" in failed.stderr
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]


def test_gcs_5xx_and_dropped_downloads_are_retried(gcs_repo, tmp_path: Path) -> None:
    repo, faults = gcs_repo
    model = _model(tmp_path)
    upload = faults.add("POST", r"/upload/storage/", "503", times=1)
    nexus(repo, "store", str(model), "m")
    assert upload.injected == 1
    read = faults.add("GET", r"alt=media", "500", times=2)
    nexus(repo, "load", "latest", str(tmp_path / "out.bin"), "-m", "m")
    assert read.injected == 2
    dropped = faults.add("GET", r"alt=media", "drop", times=1)
    nexus(repo, "load", "latest", str(tmp_path / "again.bin"), "-m", "m")
    assert dropped.injected == 1
    assert (tmp_path / "out.bin").read_bytes() == model.read_bytes()
    assert (tmp_path / "again.bin").read_bytes() == model.read_bytes()
