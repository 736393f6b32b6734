"""NexusML control plane: model binaries versioned against Git commits.

core/       the error tree, hashing, sizes, format detection (every part may use these)
settings/   `.nexusrc`, NEXUS_* and flags through one pydantic-settings mechanism
metadata/   `.nexus_meta.json`: format, entries, locked atomic writes, the listing index
storage/    backends (local, S3, GCS) built from explicit values
registry/   the `Registry` facade and the parts it delegates to
serving/    `nexus serve`'s supervisor of the model server and the proxy
cli/        the `nexus` commands and their terminal rendering
"""

from typing import TYPE_CHECKING

from control_plane.core.errors import (
    AmbiguousRefError,
    ConfigError,
    ConflictError,
    GitError,
    IntegrityError,
    MetadataError,
    MetadataFileError,
    NexusError,
    NotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    TrustError,
    UsageError,
)
from control_plane.core.lazy import lazy_names

if TYPE_CHECKING:
    from control_plane.metadata import ModelEntry
    from control_plane.registry import Registry, RollbackResult, StoreRequest, StoreResult, query
    from control_plane.settings import NexusConfig, load_config

# Loaded on first use: `nexus list` answered from its cache imports none of the registry.
_LAZY = {
    "ModelEntry": "control_plane.metadata",
    "Registry": "control_plane.registry",
    "RollbackResult": "control_plane.registry",
    "StoreRequest": "control_plane.registry",
    "StoreResult": "control_plane.registry",
    "query": "control_plane.registry",
    "NexusConfig": "control_plane.settings",
    "load_config": "control_plane.settings",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "AmbiguousRefError",
    "ConfigError",
    "ConflictError",
    "GitError",
    "IntegrityError",
    "MetadataError",
    "MetadataFileError",
    "ModelEntry",
    "NexusConfig",
    "NexusError",
    "NotFoundError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "Registry",
    "RollbackResult",
    "StorageError",
    "StoreRequest",
    "StoreResult",
    "TrustError",
    "UsageError",
    "load_config",
    "query",
]
