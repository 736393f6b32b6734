"""The whole CLI flow and the fault cases against S3 (moto, and SeaweedFS, a real S3 server),
GCS (the emulator) and Azure Blob Storage (Azurite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from control_plane import Registry, StorageError
from control_plane.cli import app
from control_plane.settings import NexusConfig
from tests.conftest import commit_all, git
from tests.harness.servers import free_port
from tests.storage.conftest import backend_config

runner = CliRunner()


def nexus(*args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def configure(repo: Path, text: str) -> None:
    (repo / ".nexusrc").write_text(text)
    commit_all(repo, "configure nexus")


def nexusrc(config: NexusConfig, **extra: str) -> str:
    """The `.nexusrc` that says what `config` holds (unset keys left out)."""
    fields = config.model_dump(include={"provider", "bucket", "endpoint_url", "region"})
    return "".join(f"{k}: {v}\n" for k, v in {**fields, **extra}.items() if v is not None)


@pytest.fixture(params=["s3", "seaweedfs", "gcs", "azure"])
def cloud_repo(request, repo: Path) -> Path:
    configure(repo, nexusrc(backend_config(request, request.param), prefix="team"))
    return repo


def test_store_list_load_rollback(cloud_repo: Path, tmp_path: Path) -> None:
    repo = cloud_repo
    first = os.urandom(300_000)
    (tmp_path / "m.pt").write_bytes(first)
    commit1 = git(repo, "rev-parse", "HEAD")
    nexus("store", str(tmp_path / "m.pt"), "cloud_model")
    entry = json.loads(nexus("list", "--json").stdout)[0]
    assert entry["storage_uri"] == f"team/cloud_model/{commit1}.pt"
    nexus("load", "latest", "out.pt", "-m", "cloud_model")
    assert (repo / "out.pt").read_bytes() == first

    (repo / "train.py").write_text("v2\n")
    commit_all(repo, "v2")
    (tmp_path / "m.pt").write_bytes(os.urandom(1000))
    nexus("store", str(tmp_path / "m.pt"), "cloud_model")
    nexus("rollback", commit1[:7], "cloud_model")
    nexus("load", "latest", "again.pt", "-m", "cloud_model")
    assert (repo / "again.pt").read_bytes() == first
    info = Registry(repo).backend.stat(entry["storage_uri"])
    assert info.sha256 == entry["sha256"]


def test_wrong_bucket_is_a_clear_error(
    repo: Path, model_file: Path, moto_url: str, s3_bucket
) -> None:
    configure(repo, f"provider: s3\nbucket: no-such-bucket\nendpoint_url: {moto_url}\n")
    result = nexus("store", str(model_file), "m", code=3)
    assert "the bucket 'no-such-bucket' does not exist" in result.stderr
    assert not (repo / ".nexus_meta.json").exists()


@pytest.mark.parametrize("server", ["s3", "seaweedfs"])
def test_a_missing_bucket_on_load_is_named_as_the_bucket(
    request, server: str, repo: Path, model_file: Path
) -> None:
    """A HEAD's 404 cannot tell a missing bucket from a missing object: the bucket is checked."""
    config = backend_config(request, server)
    configure(repo, nexusrc(config))
    nexus("store", str(model_file), "m")
    commit_all(repo, "stored")
    configure(repo, nexusrc(config.model_copy(update={"bucket": "no-such-bucket"})))
    result = nexus("load", "latest", "out.pt", code=3)
    assert "the bucket 'no-such-bucket' does not exist" in result.stderr
    assert not (repo / "out.pt").exists()


def test_wrong_gcs_bucket(repo: Path, model_file: Path, gcs_bucket) -> None:
    configure(repo, "provider: gcs\nbucket: no-such-bucket\n")
    result = nexus("store", str(model_file), "m", code=3)
    assert "no-such-bucket" in result.stderr
    assert not (repo / ".nexus_meta.json").exists()


def test_unreachable_endpoint_names_it(
    repo: Path, model_file: Path, monkeypatch, aws_credentials
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = f"http://127.0.0.1:{free_port()}"
    configure(repo, f"provider: s3\nbucket: b\nendpoint_url: {dead}\nregion: us-east-1\n")
    result = nexus("store", str(model_file), "m", code=3)
    assert f"cannot reach the S3 endpoint {dead}" in result.stderr


def test_no_credentials(repo: Path, model_file: Path, moto_url: str) -> None:
    configure(repo, f"provider: s3\nbucket: b\nendpoint_url: {moto_url}\nregion: us-east-1\n")
    result = nexus("store", str(model_file), "m", code=3)
    assert "no AWS credentials were found" in result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr


def test_object_changed_behind_our_back(repo: Path, model_file: Path, moto_url, s3_bucket) -> None:
    configure(repo, f"provider: s3\nbucket: {s3_bucket}\nendpoint_url: {moto_url}\n")
    nexus("store", str(model_file), "m")
    key = json.loads(nexus("list", "--json").stdout)[0]["storage_uri"]
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key=key, Body=os.urandom(model_file.stat().st_size))
    (repo / "out.pt").write_bytes(b"keep me")
    result = nexus("load", "latest", "out.pt", code=3)
    assert "sha256" in result.stderr
    assert (repo / "out.pt").read_bytes() == b"keep me"
    assert not [p for p in repo.iterdir() if p.name.endswith(".part")]


def test_existing_object_with_other_bytes_is_never_overwritten(
    repo: Path, model_file: Path, moto_url, s3_bucket
) -> None:
    configure(repo, f"provider: s3\nbucket: {s3_bucket}\nendpoint_url: {moto_url}\n")
    commit = git(repo, "rev-parse", "HEAD")
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key=f"m/{commit}.pt", Body=b"someone else's bytes")
    result = nexus("store", str(model_file), "m", code=3)
    assert "already holds other bytes" in result.stderr
    body = client.get_object(Bucket=s3_bucket, Key=f"m/{commit}.pt")["Body"].read()
    assert body == b"someone else's bytes"


def test_s3_server_stopped_mid_upload_then_retry(
    repo: Path, tmp_path: Path, monkeypatch, aws_credentials
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket="faulty")
    configure(
        repo,
        f"provider: s3\nbucket: faulty\nendpoint_url: {url}\nregion: us-east-1\n"
        "multipart_chunk_mb: 5\nmax_concurrency: 1\n",
    )
    model = tmp_path / "big.pt"
    model.write_bytes(os.urandom(30 * 1024 * 1024))

    class StopServerOnce:
        stopped = False

        def start(self, description: str, total: int):
            def advance(n: int) -> None:
                if description == "uploading" and not self.stopped:
                    self.stopped = True
                    server.stop()

            return advance

    try:
        with pytest.raises(StorageError) as info:
            Registry(repo).store(model, "big", progress=StopServerOnce())
        assert url in info.value.message or "failed" in info.value.message
        assert not (repo / ".nexus_meta.json").exists()

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        commit = git(repo, "rev-parse", "HEAD")
        assert client.list_objects_v2(Bucket="faulty").get("KeyCount", 0) == 0
        result = Registry(repo).store(model, "big")
        assert result.entry.storage_uri == f"big/{commit}.pt"
        head = client.head_object(Bucket="faulty", Key=f"big/{commit}.pt")
        assert head["ContentLength"] == model.stat().st_size
        Registry(repo).load("latest", tmp_path / "back.pt")
        assert (tmp_path / "back.pt").read_bytes() == model.read_bytes()
    finally:
        server.stop()


def test_orphan_object_with_the_same_bytes_is_adopted(
    repo: Path, model_file: Path, moto_url, s3_bucket
) -> None:
    """An object uploaded earlier without an entry (and without sha256 metadata) is reused."""
    configure(repo, f"provider: s3\nbucket: {s3_bucket}\nendpoint_url: {moto_url}\n")
    commit = git(repo, "rev-parse", "HEAD")
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key=f"m/{commit}.pt", Body=model_file.read_bytes())
    assert not (repo / ".nexus").exists()
    nexus("store", str(model_file), "m")
    assert json.loads(nexus("list", "--json").stdout)[0]["storage_uri"] == f"m/{commit}.pt"


def test_gc_on_cloud_stores(cloud_repo: Path, tmp_path: Path) -> None:
    """gc over real S3 and GCS servers: their own object times, their listing, their delete.
    The store's clock cannot be set back, so the plan is made as if gc ran a minute later."""
    import time

    from control_plane.registry import gc

    repo = cloud_repo
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "shared.bin").write_bytes(b"kept: both versions have it")
    (tree / "only_v1.bin").write_bytes(b"garbage once v1 is deleted")
    nexus("store", str(tree), "dir_model", "-q")
    commit_all(repo, "v1")
    (repo / "train.py").write_text("v2\n")
    commit_all(repo, "v2 code")
    (tree / "only_v1.bin").unlink()
    nexus("store", str(tree), "dir_model", "-q")
    nexus("delete", "dir_model@v1")
    commit_all(repo, "v2 stored, v1 deleted")

    registry = Registry(repo)
    later = time.time() + 60
    young = gc.plan(
        registry.objects, registry.workspace.git(), registry.metadata.path, "team", 3600
    )
    assert young.candidates == []
    plan = gc.plan(
        registry.objects, registry.workspace.git(), registry.metadata.path, "team", 0, started=later
    )
    doomed = sorted(c.key for c in plan.candidates)
    assert len(doomed) == 2  # v1's manifest and the file only v1 had
    assert any(key.endswith(".tree.json") for key in doomed)
    outcome = registry.gc_collect(plan)
    assert sorted(d.key for d in outcome.deleted) == doomed
    nexus("load", "dir_model@v2", str(tmp_path / "back"))
    assert (tmp_path / "back" / "shared.bin").read_bytes() == b"kept: both versions have it"
    assert "1 of 1 versions verified" in nexus("verify", "-m", "dir_model").stdout
