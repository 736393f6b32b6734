"""Each backend supplies a fixture; every backend must pass the one contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.registry.backends import open_backend
from control_plane.settings import NexusConfig
from control_plane.storage import LocalBackend, StorageBackend


@pytest.fixture(params=["local", "s3", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        url = request.getfixturevalue("moto_url")
        config = NexusConfig(
            provider="s3",
            bucket=bucket,
            endpoint_url=url,
            region="us-east-1",
            multipart_chunk_mb=5,
        )
        return open_backend(config, tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    return open_backend(NexusConfig(provider="gcs", bucket=bucket, multipart_chunk_mb=1), tmp_path)
