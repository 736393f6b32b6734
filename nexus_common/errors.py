"""The root of NexusML's error trees: one per part, joined here.

    NexusError(message, hint)      every expected failure: one sentence, an optional hint
    ├── FileFormatError            a file we read breaks its format (key, token, bundle files)
    │   └── KeyFileError           the API-key file (nexus_common.keyfiles)
    ├── WireError                  a batch request or reply that breaks the contract (wire)
    ├── V2Error                    a v2 request that breaks the protocol: 400 (v2wire)
    ├── SignatureError             a model signature that is not one, or a misfit: exit 2
    ├── HandlerSpecError           a handler's package.module:Class that is not one (handlers)
    ├── control_plane.core.errors  the registry's tree (usage, config, git, metadata, storage)
    ├── model_server.errors        loading, readiness, decoding an item
    └── batch_proxy.errors         the batch's fate, the proxy's settings, its HTTP client

The floor's own errors are defined here too (its modules import them), so every part's tree
is one module: this one, `control_plane/core/errors.py`, `model_server/errors.py`,
`batch_proxy/errors.py`. Those parsing code used to catch as `ValueError` still are one
(a second base). Whoever meets
one of these answers it as one sentence: the CLI's handler with its exit code, the servers
as a 4xx JSON `{"error": ...}`.
"""

from __future__ import annotations


class NexusError(Exception):
    """Base of every expected failure: one sentence, an optional hint.

    `exit_code` is what the CLI exits with: 1 by default, 2 for usage errors (as click's
    own), 3 when a store or a signature failed us.
    """

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class FileFormatError(NexusError, ValueError):
    """A file NexusML reads (an API-key file, a token file, a signature bundle) cannot be
    read or breaks its format. A ValueError too: parsing code catches it as one."""


class WireError(NexusError, ValueError):
    """A request or reply that breaks the contract: a status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class V2Error(NexusError, ValueError):
    """A request that breaks the protocol: answered 400 with this sentence."""

    status = 400


class KeyFileError(FileFormatError):
    """The key file cannot be read or breaks its format."""


class SignatureError(NexusError, ValueError):
    """A model signature that is not one, or that contradicts the model: one sentence.
    A usage error where a person gave it (`nexus store --signature`): exit code 2."""

    exit_code = 2


class HandlerSpecError(NexusError, ValueError):
    """A handler's `package.module:Class` that does not name an importable class."""
