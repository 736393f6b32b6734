"""Each backend supplies a fixture; every backend must pass the one contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.storage import LocalBackend, StorageBackend


@pytest.fixture(params=["local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    raise AssertionError(request.param)
