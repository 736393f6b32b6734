"""The registry: a small facade (`Registry`) over the store pipeline, object fetch and
verification, reference resolution, lifecycle, lineage, history, queries and provenance."""

from control_plane.registry.dotfiles import ensure_gitignored
from control_plane.registry.facade import Registry, RollbackResult
from control_plane.registry.objects import ProgressReporter
from control_plane.registry.resolve import validate_model_name
from control_plane.registry.store import StoreRequest, StoreResult

__all__ = [
    "ProgressReporter",
    "Registry",
    "RollbackResult",
    "StoreRequest",
    "StoreResult",
    "ensure_gitignored",
    "validate_model_name",
]
