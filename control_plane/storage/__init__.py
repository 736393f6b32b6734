"""Storage backends behind one interface, created lazily from the configuration."""

from __future__ import annotations

from pathlib import Path

from control_plane.config import NexusConfig
from control_plane.errors import ConfigError
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key
from control_plane.storage.local import LocalBackend

__all__ = ["LocalBackend", "ObjectInfo", "StorageBackend", "check_key", "open_backend"]


_EXTRAS = {"s3": ("boto3", "s3"), "gcs": ("google.cloud.storage", "gcs")}


def open_backend(config: NexusConfig, repo_root: Path) -> StorageBackend:
    """The backend `config.provider` names; cloud SDKs are imported only when used."""
    if config.provider == "local":
        return LocalBackend(config.local_root(repo_root))
    module, extra = _EXTRAS[config.provider]
    try:
        if config.provider == "s3":
            from control_plane.storage.s3 import S3Backend

            return S3Backend(config)
        from control_plane.storage.gcs import GCSBackend

        return GCSBackend(config)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(module.split(".")[0]):
            raise
        raise ConfigError(
            f"provider '{config.provider}' needs the {module} package, which is not installed.",
            hint=f"pip install 'nexusml[{extra}]'",
        ) from exc
