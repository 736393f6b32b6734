"""Storage backends behind one interface, created lazily from the configuration."""

from __future__ import annotations

from pathlib import Path

from control_plane.config import NexusConfig
from control_plane.errors import ConfigError
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key
from control_plane.storage.local import LocalBackend

__all__ = ["LocalBackend", "ObjectInfo", "StorageBackend", "check_key", "open_backend"]


def open_backend(config: NexusConfig, repo_root: Path) -> StorageBackend:
    """The backend `config.provider` names; cloud SDKs are imported only when used."""
    if config.provider == "local":
        return LocalBackend(config.local_root(repo_root))
    raise ConfigError(
        f"provider '{config.provider}' is not available in this version of nexusml.",
        hint="use 'provider: local' (the default) for now",
    )
