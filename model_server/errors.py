"""The model server's error tree (under nexus_common.errors.NexusError).

ModelLoadError      the model cannot be loaded as configured: the server stops with it
NotReadyError       no version is loaded yet (or loading failed): 503
ModelNotFoundError  no model of that name is served here: 404 (gRPC NOT_FOUND)
ItemDecodeError     one item cannot be decoded: an ItemFailure at its index
ModelRunError       the model raised on a batch in its worker: as if it had raised here
FollowError         the remote could not be fetched: the workspace is left as it was
WorkerFailedError   a model's worker process died, hung or broke the protocol on a batch:
                    the whole batch fails (500), the worker is replaced
  WorkerProtocolError   the worker sent something malformed (it is not trusted)
ChannelClosedError  the other end of a worker's socket is gone (the worker's own view)
ConfinementError    a confinement layer asked for cannot be applied
"""

from __future__ import annotations

from nexus_common.errors import NexusError


class ModelLoadError(NexusError):
    """The model cannot be loaded as configured; the server stops with this message."""


class NotReadyError(NexusError):
    """No version is loaded yet (or loading failed): 503."""


class ModelNotFoundError(NexusError):
    """No model of that name is served here: 404."""


class ItemDecodeError(NexusError):
    """One item cannot be decoded; it becomes an ItemFailure at its index."""


class ModelRunError(NexusError):
    """The model raised on a batch in its worker; the message is the model's own."""


class FollowError(NexusError):
    """The remote could not be fetched; the workspace is left as it was."""


class WorkerFailedError(NexusError):
    """A model's worker died, hung past the batch deadline or broke the protocol while it
    held a batch: that batch fails as a whole (500) and the worker is replaced."""


class WorkerProtocolError(WorkerFailedError):
    """The worker sent a malformed message or array descriptor; what it sends is checked."""


class ChannelClosedError(NexusError):
    """The other end of a worker's socketpair is gone."""


class ConfinementError(NexusError):
    """A confinement layer cannot be applied as asked (a kernel call failed)."""
