"""The model server's error tree (under nexus_common.errors.NexusError).

ModelLoadError      the model cannot be loaded as configured: the server stops with it
NotReadyError       no version is loaded yet (or loading failed): 503
ItemDecodeError     one item cannot be decoded: an ItemFailure at its index
FollowError         the remote could not be fetched: the workspace is left as it was
"""

from __future__ import annotations

from nexus_common.errors import NexusError


class ModelLoadError(NexusError):
    """The model cannot be loaded as configured; the server stops with this message."""


class NotReadyError(NexusError):
    """No version is loaded yet (or loading failed): 503."""


class ItemDecodeError(NexusError):
    """One item cannot be decoded; it becomes an ItemFailure at its index."""


class FollowError(NexusError):
    """The remote could not be fetched; the workspace is left as it was."""
