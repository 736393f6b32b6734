"""Azure Blob Storage against Azurite (Microsoft's emulator) as a real process: a large file
in parallel blocks, and the faults a team meets (the service gone mid-transfer, a wrong key,
a missing container, a key in .nexusrc)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from control_plane import Registry, StorageError
from tests.conftest import commit_all, git
from tests.harness.servers import free_port
from tests.harness.stores import AZURITE_KEY, azurite_connection_string, azurite_server
from tests.storage.test_cloud_flow import configure, nexus

MIB = 1024 * 1024


def blobs(connection: str, container: str) -> dict[str, int]:
    client = BlobServiceClient.from_connection_string(connection).get_container_client(container)
    return {b.name: b.size for b in client.list_blobs()}


def test_a_300_mib_model_in_parallel_blocks(
    repo: Path, tmp_path: Path, azure_container: str
) -> None:
    configure(repo, f"provider: azure\nbucket: {azure_container}\nmultipart_chunk_mb: 8\n")
    model = tmp_path / "big.pt"
    digest = hashlib.sha256()
    with model.open("wb") as out:
        for _ in range(300):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            out.write(chunk)
    seen: list[int] = []

    class Progress:
        def start(self, description: str, total: int):
            return seen.append

    result = Registry(repo).store(model, "big", progress=Progress())
    assert sum(seen) >= 300 * MIB
    props = Registry(repo).backend.stat(result.entry.storage_uri)
    assert props.size == 300 * MIB
    assert props.sha256 == digest.hexdigest()
    model.unlink()
    Registry(repo).load("latest", tmp_path / "back.pt")
    back = hashlib.sha256()
    with (tmp_path / "back.pt").open("rb") as data:
        while chunk := data.read(8 * MIB):
            back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()


@pytest.mark.long
def test_azurite_stopped_mid_upload_leaves_nothing_then_a_retry_stores(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, data = free_port(), tmp_path / "azurite"  # kept on disk: it outlives the restart
    model = tmp_path / "m.pt"
    model.write_bytes(os.urandom(24 * MIB))
    configure(repo, "provider: azure\nbucket: faulty\nmultipart_chunk_mb: 4\nmax_concurrency: 1\n")
    server = azurite_server(data, port, on_disk=True)
    connection = azurite_connection_string(server.__enter__())
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    BlobServiceClient.from_connection_string(connection).create_container("faulty")

    stopped: list[bool] = []

    class StopOnce:
        def start(self, description: str, total: int):
            def advance(n: int) -> None:
                if description == "uploading" and not stopped:
                    stopped.append(True)  # a block is staged: the service goes away
                    server.__exit__(None, None, None)

            return advance

    try:
        with pytest.raises(StorageError, match=r"Azure Blob Storage|failed"):
            Registry(repo).store(model, "m", progress=StopOnce())
        assert stopped
        assert not (repo / ".nexus_meta.json").exists()
    finally:
        server.__exit__(None, None, None)
    with azurite_server(data, port, on_disk=True):
        assert blobs(connection, "faulty") == {}  # staged blocks are never a visible blob
        commit = git(repo, "rev-parse", "HEAD")
        Registry(repo).store(model, "m")
        assert blobs(connection, "faulty") == {f"m/{commit}.pt": 24 * MIB}
        Registry(repo).load("latest", tmp_path / "back.pt")
        assert (tmp_path / "back.pt").read_bytes() == model.read_bytes()


def test_a_wrong_key_and_a_missing_container_are_one_sentence(
    repo: Path, model_file: Path, azurite_url: str, azure_container: str, monkeypatch
) -> None:
    wrong = azurite_connection_string(azurite_url, key=AZURITE_KEY[::-1])
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    configure(repo, f"provider: azure\nbucket: {azure_container}\n")
    denied = nexus("store", str(model_file), "m", code=3).stderr
    assert "was denied" in denied
    assert "AZURE_STORAGE_CONNECTION_STRING" in denied
    assert not (repo / ".nexus_meta.json").exists()

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(azurite_url))
    configure(repo, "provider: azure\nbucket: no-such-container\n")
    missing = nexus("store", str(model_file), "m", code=3).stderr
    assert "the container 'no-such-container' does not exist" in missing
    assert not (repo / ".nexus_meta.json").exists()

    configure(repo, f"provider: azure\nbucket: {azure_container}\n")
    nexus("store", str(model_file), "m")
    commit_all(repo, "stored")
    configure(repo, "provider: azure\nbucket: no-such-container\n")
    gone = nexus("load", "latest", "out.pt", code=3).stderr
    assert "the container 'no-such-container' does not exist" in gone
    assert not (repo / "out.pt").exists()


def test_the_account_key_from_the_environment_with_the_account_url(
    repo: Path, model_file: Path, azurite_url: str, azure_container: str, monkeypatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    configure(repo, f"provider: azure\nbucket: {azure_container}\nendpoint_url: {azurite_url}\n")
    nexus("store", str(model_file), "m")
    nexus("load", "latest", "out.pt")
    assert (repo / "out.pt").read_bytes() == model_file.read_bytes()


@pytest.mark.parametrize(
    "line",
    [
        "connection_string: DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==",
        "account_key: abc==",
        "sas_token: sv=2024&sig=abc",
        "endpoint_url: https://a.blob.core.windows.net/?sv=2024&sig=abc",
    ],
)
def test_a_secret_in_nexusrc_is_refused(repo: Path, model_file: Path, line: str) -> None:
    configure(repo, f"provider: azure\nbucket: models\n{line}\n")
    result = nexus("store", str(model_file), "m", code=1)
    assert "AZURE_STORAGE_CONNECTION_STRING" in result.stderr
    assert not (repo / ".nexus_meta.json").exists()


def test_no_account_is_one_sentence(repo: Path, model_file: Path) -> None:
    configure(repo, "provider: azure\nbucket: models\n")
    result = nexus("store", str(model_file), "m", code=1)
    assert "needs the storage account" in result.stderr


def test_a_signed_version_keeps_its_bundle_beside_the_blob(
    repo: Path, tmp_path: Path, azure_container: str
) -> None:
    from control_plane.registry.trust.keys import generate

    keys = tmp_path / "keys"
    (keys / "trusted").mkdir(parents=True)
    generate(keys / "ada.key")
    (keys / "trusted" / "ada.pub").write_bytes((keys / "ada.key.pub").read_bytes())
    configure(repo, f"provider: azure\nbucket: {azure_container}\n")
    (tmp_path / "m.pt").write_bytes(os.urandom(4096))
    nexus("store", str(tmp_path / "m.pt"), "m", "--sign", "--key", str(keys / "ada.key"))
    commit_all(repo, "stored and signed")
    configure(
        repo,
        f"provider: azure\nbucket: {azure_container}\ntrusted_keys: {keys / 'trusted'}\n"
        "require_signature: true\n",
    )
    entry = Registry(repo).resolve("latest", "m")
    stored = blobs(os.environ["AZURE_STORAGE_CONNECTION_STRING"], azure_container)
    assert entry.signature is not None
    assert entry.signature["bundle"] in stored
    assert "valid, by ada, a trusted key" in nexus("verify").stdout
    nexus("load", "latest", str(tmp_path / "out.pt"))
    assert (tmp_path / "out.pt").read_bytes() == (tmp_path / "m.pt").read_bytes()
