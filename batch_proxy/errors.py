"""The proxy's error tree (under nexus_common.errors.NexusError).

SettingsError              a setting is out of range or contradicts another
UnknownModel               no upstream serves the model named: 404
BodyTooLarge, ClientGone   a request's body passed the limit (413), or its client left
ClientError                an upstream call got no usable reply
├── ConnectionFailed       could not connect, or the connection broke mid-reply
└── BadReply               not HTTP
BatchError                 a batch's (or one caller's) fate, with its HTTP status
├── UpstreamError          502: unreachable, or answered badly
│   ├── UpstreamNotReadyError  503 + Retry-After: up, but serving no version yet
│   └── NoUpstreamError    502 at once: no healthy upstream
├── RejectedError          the upstream's 4xx: the callers' error
├── QueueFullError         429 + Retry-After
├── ShuttingDownError      503
├── DeadlineError          504
└── ItemError              422: the upstream failed this item
RefusedError               the proxy refused a caller itself, with the HTTP status (the gRPC
                           frontend answers the matching status code)
"""

from __future__ import annotations

from typing import Any

from nexus_common.errors import NexusError


class SettingsError(NexusError, ValueError):
    """A setting is out of range or contradicts another."""


class UnknownModel(NexusError, LookupError):
    """No upstream serves the model named: 404 with this sentence."""


class BodyTooLarge(NexusError):
    """The body passed the limit: the caller answers 413."""


class ClientGone(NexusError):
    """The client disconnected before its body arrived."""


class ClientError(NexusError):
    """An upstream call that got no usable reply."""


class ConnectionFailed(ClientError):
    """Could not connect, or the connection broke before a whole reply."""


class BadReply(ClientError):
    """The upstream's bytes are not an HTTP reply."""


class BatchError(NexusError):
    """A failure that answers every caller of a batch (or one caller) with one sentence."""

    status = 502


class UpstreamError(BatchError):
    """The upstream could not be reached or answered badly: 502."""


class RejectedError(BatchError):
    """The upstream refused the batch's input (a 4xx): the callers' error, with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UpstreamNotReadyError(UpstreamError):
    """The upstream is up but serves no version yet (its 503, e.g. nothing stored): 503
    with Retry-After, so callers wait and retry rather than report a broken gateway."""

    status = 503


class NoUpstreamError(UpstreamError):
    """No healthy upstream exists to take a batch: 502 at once rather than a long wait."""


class QueueFullError(BatchError):
    """The request's priority level holds all it may: 429 with Retry-After, at once."""

    status = 429


class ShuttingDownError(BatchError):
    """The proxy is draining: 503."""

    status = 503


class DeadlineError(BatchError):
    """The item's deadline passed before its batch was formed: 504."""

    status = 504


class ItemError(BatchError):
    """The upstream answered the batch but failed this item (the wire's `errors`): 422."""

    status = 422

    def __init__(self, message: str, model: Any) -> None:
        super().__init__(message)
        self.model = model


class RefusedError(NexusError):
    """A caller refused by the proxy itself (admission, a bad request, a deadline), with
    the HTTP status its answer has; the gRPC frontend answers the matching status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
