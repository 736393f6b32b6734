"""NexusML control plane: model binaries versioned against Git commits."""

from control_plane.config import NexusConfig, load_config
from control_plane.errors import (
    AmbiguousRefError,
    ConfigError,
    ConflictError,
    GitError,
    IntegrityError,
    MetadataError,
    NexusError,
    NotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    UsageError,
)
from control_plane.metadata import ModelEntry
from control_plane.registry import Registry, RollbackResult, StoreResult

__all__ = [
    "AmbiguousRefError",
    "ConfigError",
    "ConflictError",
    "GitError",
    "IntegrityError",
    "MetadataError",
    "ModelEntry",
    "NexusConfig",
    "NexusError",
    "NotFoundError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "Registry",
    "RollbackResult",
    "StorageError",
    "StoreResult",
    "UsageError",
    "load_config",
]
