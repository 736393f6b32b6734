"""Which HTTP status each registry error is, and the one sentence it says."""

from __future__ import annotations

from control_plane.core.errors import (
    AmbiguousRefError,
    ConflictError,
    ForbiddenError,
    GitError,
    NexusError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    TrustError,
    UnauthorizedError,
    UsageError,
)

_STATUS: tuple[tuple[type[NexusError], int], ...] = (
    (UnauthorizedError, 401),
    (ForbiddenError, 403),
    (ReadOnlyError, 403),
    (NotFoundError, 404),
    (AmbiguousRefError, 409),
    (ConflictError, 409),
    (TrustError, 409),
    (UsageError, 422),
    (GitError, 503),  # the commit or the push: the change is not made (or not yet shared)
    (StorageError, 503),
)


def status_of(exc: NexusError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 400)


def sentence(exc: NexusError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message
