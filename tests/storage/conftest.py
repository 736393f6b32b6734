"""Each backend supplies a fixture; every backend must pass the one contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.registry.backends import open_backend
from control_plane.settings import NexusConfig
from control_plane.storage import LocalBackend, StorageBackend

BACKENDS = ["local", "s3", "seaweedfs", "gcs", "azure"]


def backend_config(request: pytest.FixtureRequest, name: str) -> NexusConfig:
    """The `.nexusrc` a user of `name` writes (small parts, so multipart paths run); the
    server's fixture puts its credentials in the environment, where users keep them."""
    if name in ("s3", "seaweedfs"):
        real = name == "seaweedfs"
        bucket = request.getfixturevalue("seaweedfs_bucket" if real else "s3_bucket")
        url = request.getfixturevalue("seaweedfs_url" if real else "moto_url")
        return NexusConfig(
            provider="s3", bucket=bucket, endpoint_url=url, region="us-east-1", multipart_chunk_mb=5
        )
    if name == "gcs":
        bucket = request.getfixturevalue("gcs_bucket")
        return NexusConfig(provider="gcs", bucket=bucket, multipart_chunk_mb=1)
    assert name == "azure"
    container = request.getfixturevalue("azure_container")
    return NexusConfig(provider="azure", bucket=container, multipart_chunk_mb=1)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    return open_backend(backend_config(request, request.param), tmp_path)
