"""The storage contract: what every backend must do, whatever it talks to."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from control_plane.core.errors import ObjectExistsError, ObjectNotFoundError, UsageError
from control_plane.storage import StorageBackend


def _file(tmp_path: Path, name: str, size: int) -> tuple[Path, str]:
    path = tmp_path / name
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_upload_download_roundtrip_with_progress(backend: StorageBackend, tmp_path: Path) -> None:
    source, digest = _file(tmp_path, "src.bin", 3 * 1024 * 1024 + 17)
    seen: list[int] = []
    backend.upload(source, "m/abc.pt", sha256=digest, progress=seen.append)
    assert sum(seen) == source.stat().st_size
    info = backend.stat("m/abc.pt")
    assert info.size == source.stat().st_size
    assert info.sha256 in (None, digest)

    dest = tmp_path / "dest.bin"
    got: list[int] = []
    backend.download("m/abc.pt", dest, progress=got.append)
    assert dest.read_bytes() == source.read_bytes()
    assert sum(got) == source.stat().st_size


def test_never_overwrites(backend: StorageBackend, tmp_path: Path) -> None:
    first, d1 = _file(tmp_path, "a", 1000)
    second, d2 = _file(tmp_path, "b", 1000)
    backend.upload(first, "m/x.pt", sha256=d1)
    with pytest.raises(ObjectExistsError):
        backend.upload(second, "m/x.pt", sha256=d2)
    dest = tmp_path / "out"
    backend.download("m/x.pt", dest)
    assert dest.read_bytes() == first.read_bytes()


def test_missing_object(backend: StorageBackend, tmp_path: Path) -> None:
    assert not backend.exists("m/none.pt")
    with pytest.raises(ObjectNotFoundError):
        backend.stat("m/none.pt")
    with pytest.raises(ObjectNotFoundError):
        backend.download("m/none.pt", tmp_path / "out")


def test_list_and_delete(backend: StorageBackend, tmp_path: Path) -> None:
    source, digest = _file(tmp_path, "s", 10)
    for key in ("a/1.pt", "a/2.pt", "b/1.pt"):
        backend.upload(source, key, sha256=digest)
    assert sorted(o.key for o in backend.list("a/")) == ["a/1.pt", "a/2.pt"]
    assert len(list(backend.list())) == 3
    backend.delete("a/1.pt")
    backend.delete("a/1.pt")  # absent is fine
    assert not backend.exists("a/1.pt")
    assert backend.exists("a/2.pt")


@pytest.mark.parametrize("key", ["../escape.pt", "/abs.pt", "a/../../b.pt", "a//b.pt", "a/./b"])
def test_keys_cannot_escape(backend: StorageBackend, key: str) -> None:
    with pytest.raises(UsageError):
        backend.stat(key)


def test_times_and_touch(backend: StorageBackend, tmp_path: Path) -> None:
    """Garbage collection judges age by the store's own time; a reuse renews it."""
    path, digest = _file(tmp_path, "t.bin", 100)
    backend.upload(path, "m/t.bin", sha256=digest)
    before = backend.stat("m/t.bin")
    assert before.modified is not None
    assert [info.modified for info in backend.list("m/")] == [before.modified]
    backend.touch("m/t.bin")
    after = backend.stat("m/t.bin")
    assert after.modified is not None
    assert after.modified >= before.modified
    assert after.size == before.size
    out = tmp_path / "back.bin"
    backend.download("m/t.bin", out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest  # bytes untouched
    with pytest.raises(ObjectNotFoundError):
        backend.touch("m/absent.bin")
