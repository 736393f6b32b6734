"""The root of NexusML's error trees: one per part, joined here.

    NexusError(message, hint)      every expected failure: one sentence, an optional hint
    ├── FileFormatError            a file we read breaks its format (key, token, bundle files)
    ├── control_plane.core.errors  the registry's tree (usage, config, git, metadata, storage)
    ├── model_server.errors        loading, readiness, decoding an item
    └── batch_proxy.errors         the batch's fate, the proxy's settings, its HTTP client

Wire-format errors (`wire.WireError`, `v2wire.V2Error`) are NexusErrors too. Whoever meets
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
