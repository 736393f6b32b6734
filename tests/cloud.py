"""Real S3 and GCS servers for tests: moto's HTTP server and gcp-storage-emulator.

Each runs once per test session on 127.0.0.1 and a free port, and is reset
before every test that uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import boto3
import pytest
import requests
from gcp_storage_emulator.server import create_server
from moto.server import ThreadedMotoServer

from tests.servers import free_port

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
