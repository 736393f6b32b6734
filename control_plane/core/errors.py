"""The control plane's error tree (the registry, the CLI, its web server, `nexus serve`).

    NexusError(message, hint)          nexus_common.errors: the root of every part's tree
    ├── UsageError                     exit code 2 (as click's): a name, a ref, a flag value
    ├── ConfigError                    .nexusrc or NEXUS_* environment
    ├── GitError                       not a repo, no commits, dirty tree
    ├── MetadataError                  .nexus_meta.json unreadable or inconsistent
    │   ├── MetadataFileError          the file cannot be read or parsed
    │   ├── NotFoundError              no version matches a ref
    │   ├── AmbiguousRefError          a ref matches several versions
    │   └── ConflictError              other bytes at an existing version
    ├── StorageError                   exit code 3: the store failed us
    │   ├── ObjectNotFoundError        the key is not in the store
    │   ├── ObjectExistsError          the key holds other bytes
    │   └── IntegrityError             bytes do not match size or sha256
    ├── TrustError                     exit code 3: a signature or signed approval fails
    │   ├── UnsignedError              required, but there is none
    │   ├── SignatureInvalidError      it does not verify (or cannot be read)
    │   ├── WrongVersionError          it was made for another version
    │   ├── UntrustedSignerError       its key is not among the trusted keys
    │   └── ContentChangedError        the bytes are not the ones signed
    ├── SignatureError                 nexus_common.signature: exit 2, a signature that is not one
    ├── FileFormatError                nexus_common.errors: a file breaks its format
    │   ├── TokenFileError             the web server's token file
    │   └── BundleError                a signature bundle
    ├── UnauthorizedError              web: no valid token where one is needed (401)
    ├── ForbiddenError                 web: the role does not allow it (403)
    ├── ReadOnlyError                  web: started without tokens (403)
    ├── ServerError                    a model server did not answer as one
    ├── ServeError                     `nexus serve`: a child could not start, or died
    └── HardwareError                  this machine lacks what a version requires (--requires)

Library errors (OSError, boto3, gitpython) are translated where they enter,
so callers catch this tree and nothing else.
"""

from __future__ import annotations

# The root comes from the floor; importing it from here (as callers always did) is the same class.
from nexus_common.errors import FileFormatError as FileFormatError
from nexus_common.errors import NexusError as NexusError


class UsageError(NexusError):
    """Bad input from the user: a model name, a ref, a key=value pair."""

    exit_code = 2


class ConfigError(NexusError):
    """`.nexusrc` or a NEXUS_* variable is wrong."""


class GitError(NexusError):
    """The Git repository is missing, empty or dirty."""


class MetadataError(NexusError):
    """`.nexus_meta.json` cannot be read or is inconsistent."""


class MetadataFileError(MetadataError):
    """The file itself cannot be read (its mode, a broken disk) or parsed (a hand edit,
    a merge left unresolved): a server following it waits for it to be fixed."""


class NotFoundError(MetadataError):
    """No version matches a ref."""


class AmbiguousRefError(MetadataError):
    """A ref matches more than one version."""


class ConflictError(MetadataError):
    """A version already exists with other bytes."""


class StorageError(NexusError):
    """The storage backend failed: unreachable, denied, missing object."""

    exit_code = 3


class ObjectNotFoundError(StorageError):
    """The object is not in the store."""


class ObjectExistsError(StorageError):
    """The object exists with other bytes and must not be overwritten."""


class IntegrityError(StorageError):
    """Downloaded or stored bytes do not match the recorded size or sha256."""


class TrustError(NexusError):
    """A version's signature or signed approval does not hold: nothing is loaded."""

    exit_code = 3


class UnsignedError(TrustError):
    """A signature (or a signed approval) is required and the version has none."""


class SignatureInvalidError(TrustError):
    """The bundle cannot be read, or its signature does not verify."""


class WrongVersionError(TrustError):
    """A valid signature, made for another version."""


class UntrustedSignerError(TrustError):
    """A valid signature by a key that is not trusted."""


class ContentChangedError(TrustError):
    """The recorded bytes are not the bytes that were signed."""


class TokenFileError(FileFormatError):
    """The registry's token file cannot be read or breaks its format."""


class BundleError(FileFormatError):
    """A bundle that cannot be read, or whose signature does not verify with the key."""


class UnauthorizedError(NexusError):
    """No valid token where one is needed: 401."""


class ForbiddenError(NexusError):
    """The actor's role does not allow the action: 403."""


class ReadOnlyError(NexusError):
    """The registry was started without tokens: every change is refused (403)."""


class ServerError(NexusError):
    """The model server could not be reached, or did not answer as one."""


class ServeError(NexusError):
    """A child could not start, or died while serving."""


class HardwareError(NexusError):
    """This machine lacks the device, memory or compute capability a version requires."""
