"""Choosing and building the storage backend that the configuration names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from control_plane.core.errors import ConfigError
from control_plane.storage import LocalBackend, StorageBackend

if TYPE_CHECKING:
    from control_plane.settings import NexusConfig

MIB = 1024 * 1024
_EXTRAS = {
    "s3": ("boto3", "s3"),
    "gcs": ("google.cloud.storage", "gcs"),
    "azure": ("azure.storage.blob", "azure"),
}


def open_backend(config: NexusConfig, repo_root: Path) -> StorageBackend:
    """The backend `config.provider` names; cloud SDKs are imported only when used."""
    if config.provider == "local":
        return LocalBackend(config.local_root(repo_root))
    assert config.bucket is not None  # the settings refuse a cloud provider without one
    module, extra = _EXTRAS[config.provider]
    chunk_bytes = config.multipart_chunk_mb * MIB
    try:
        if config.provider == "s3":
            from control_plane.storage.s3 import S3Backend

            return S3Backend(
                config.bucket,
                endpoint_url=config.endpoint_url,
                region=config.region,
                chunk_bytes=chunk_bytes,
                max_concurrency=config.max_concurrency,
            )
        if config.provider == "azure":
            from control_plane.storage.azure import AzureBlobBackend

            return AzureBlobBackend.from_environment(
                config.bucket,
                config.endpoint_url,
                chunk_bytes=chunk_bytes,
                max_concurrency=config.max_concurrency,
            )
        from control_plane.storage.gcs import GCSBackend

        return GCSBackend(config.bucket, chunk_bytes=chunk_bytes)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(module.split(".")[0]):
            raise
        raise ConfigError(
            f"provider '{config.provider}' needs the {module} package, which is not installed.",
            hint=f"pip install 'nexusml[{extra}]'",
        ) from exc
