"""Azure Blob Storage through the official azure-storage-blob SDK.

Objects are block blobs in one container. An upload is staged in blocks of
`chunk_bytes`, `max_concurrency` at a time, and committed with `If-None-Match: *`
(the SDK's `overwrite=False`): an existing blob is never replaced, and blocks of
an upload that failed are never visible. Downloads are ranged and parallel. The
sha256 is stored as blob metadata.

Credentials come only from the environment, as the other providers' do:
AZURE_STORAGE_CONNECTION_STRING (which names the account too), or the account URL
(`endpoint_url`) with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or else
Azure's default credential chain (azure-identity: managed identity, the Azure CLI's
login, AZURE_CLIENT_ID/_SECRET/_TENANT_ID...).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from azure.core import exceptions as aexc
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from control_plane.core.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
)
from control_plane.core.hashing import ProgressCallback
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key, writing_to

MIB = 1024 * 1024
CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_KEY = "AZURE_STORAGE_ACCOUNT_KEY"
SAS_TOKEN = "AZURE_STORAGE_SAS_TOKEN"
_CREDENTIALS_HINT = (
    f"set {CONNECTION_STRING}, or {ACCOUNT_KEY} (or {SAS_TOKEN}) with endpoint_url, "
    "or sign in for Azure's default credentials ('az login', a managed identity)"
)


class AzureBlobBackend(StorageBackend):
    """Blobs in `container`; blocks of `chunk_bytes`, `max_concurrency` at a time."""

    def __init__(self, container: ContainerClient, *, max_concurrency: int = 8) -> None:
        """`container` carries the block sizes (see `from_environment`)."""
        self.container = container
        self.max_concurrency = max_concurrency
        self.account_url = container.url.rsplit("/", 1)[0]

    @classmethod
    def from_environment(
        cls,
        container: str,
        account_url: str | None,
        *,
        chunk_bytes: int = 64 * MIB,
        max_concurrency: int = 8,
        environ: Mapping[str, str] | None = None,
    ) -> AzureBlobBackend:
        """The backend for `container`, with credentials found as the module says."""
        env = os.environ if environ is None else environ
        sizes: dict[str, Any] = {
            "max_block_size": chunk_bytes,
            "max_single_put_size": chunk_bytes,
            "max_chunk_get_size": chunk_bytes,
            "max_single_get_size": chunk_bytes,
            "connection_timeout": 10,
            "read_timeout": 60,
            # The SDK's own default waits 15, 18 and 24 s between tries: a store that is
            # down took 82 s to be said. Three attempts, 1 and 3 s apart, as S3's standard.
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2),
        }
        if env.get(CONNECTION_STRING):
            try:
                service = BlobServiceClient.from_connection_string(env[CONNECTION_STRING], **sizes)
            except ValueError as exc:
                raise ConfigError(
                    f"{CONNECTION_STRING} is not a valid connection string: {exc}.",
                    hint="copy it from the storage account's 'Access keys' page",
                ) from None
        elif account_url:
            credential = _credential(account_url, env)
            service = BlobServiceClient(account_url, credential=credential, **sizes)
        else:
            raise ConfigError(
                "provider 'azure' needs the storage account: set endpoint_url in .nexusrc "
                f"(https://ACCOUNT.blob.core.windows.net) or {CONNECTION_STRING}.",
            )
        return cls(service.get_container_client(container), max_concurrency=max_concurrency)

    def uri(self, key: str) -> str:
        return f"{self.container.url}/{key}"

    def upload(
        self, source: Path, key: str, *, sha256: str, progress: ProgressCallback | None = None
    ) -> None:
        blob = self.container.get_blob_client(check_key(key))
        with self._errors(key), source.open("rb") as data:
            blob.upload_blob(
                data,
                length=source.stat().st_size,
                overwrite=False,  # If-None-Match: * on the commit
                metadata={"sha256": sha256},
                max_concurrency=self.max_concurrency,
                progress_hook=_deltas(progress),
            )

    def download(self, key: str, dest: Path, *, progress: ProgressCallback | None = None) -> None:
        blob = self.container.get_blob_client(check_key(key))
        with self._errors(key), writing_to(dest):
            stream = blob.download_blob(
                max_concurrency=self.max_concurrency, progress_hook=_deltas(progress)
            )
            with dest.open("wb") as out:
                stream.readinto(out)

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            props = self.container.get_blob_client(check_key(key)).get_blob_properties()
        return ObjectInfo(
            key=key,
            size=int(props.size),
            sha256=(props.metadata or {}).get("sha256"),
            modified=props.last_modified.timestamp(),
        )

    def touch(self, key: str) -> None:
        """Setting the same metadata again renews Last-Modified; the bytes are untouched."""
        blob = self.container.get_blob_client(check_key(key))
        with self._errors(key):
            blob.set_blob_metadata(blob.get_blob_properties().metadata or {})

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._errors(prefix or "/"):
            for item in self.container.list_blobs(name_starts_with=prefix or None):
                yield ObjectInfo(
                    key=item.name,
                    size=int(item.size),
                    modified=item.last_modified.timestamp(),
                )

    def delete(self, key: str) -> None:
        with self._errors(key), contextlib.suppress(aexc.ResourceNotFoundError):
            self.container.delete_blob(check_key(key))

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Map the SDK's errors to the project's, naming the container, blob or account."""
        where = self.uri(key)
        try:
            yield
        except aexc.ResourceExistsError as exc:
            raise ObjectExistsError(f"{where} already exists; it will not be overwritten.") from exc
        except aexc.ResourceModifiedError as exc:  # the If-None-Match: * commit lost a race
            raise ObjectExistsError(f"{where} already exists; it will not be overwritten.") from exc
        except aexc.ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise StorageError(
                    f"the container '{self.container.container_name}' does not exist in "
                    f"{self.account_url}.",
                    hint="create it, or fix 'bucket' in .nexusrc",
                ) from exc
            raise ObjectNotFoundError(f"{where} does not exist.") from exc
        except aexc.ClientAuthenticationError as exc:
            raise StorageError(
                f"access to {where} was denied ({_code(exc) or 'authentication failed'}).",
                hint=_CREDENTIALS_HINT,
            ) from exc
        except aexc.ServiceRequestError as exc:
            raise StorageError(
                f"cannot reach Azure Blob Storage at {self.account_url}.",
                hint="check endpoint_url in .nexusrc and that the service is running",
            ) from exc
        except aexc.AzureError as exc:
            message = str(getattr(exc, "message", exc) or exc).splitlines()[0].rstrip(".")
            raise StorageError(f"the transfer of {where} failed: {message}.") from exc
        except ImportError as exc:  # the default credential chain needs azure-identity
            raise ConfigError(
                f"no Azure credentials were found and {exc.name} is not installed.",
                hint=_CREDENTIALS_HINT,
            ) from exc


def _credential(account_url: str, env: Mapping[str, str]) -> Any:
    if env.get(ACCOUNT_KEY):
        return {"account_name": _account_name(account_url), "account_key": env[ACCOUNT_KEY]}
    if env.get(SAS_TOKEN):
        return env[SAS_TOKEN]
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ConfigError(
            "no Azure credentials were found in the environment, and azure-identity (for "
            "Azure's default credential chain) is not installed.",
            hint=_CREDENTIALS_HINT,
        ) from exc
    return DefaultAzureCredential()


def _account_name(account_url: str) -> str:
    """`https://NAME.blob.core.windows.net` or an emulator's `http://HOST:PORT/NAME`."""
    parsed = urlparse(account_url)
    host = parsed.hostname or ""
    if host.endswith(".blob.core.windows.net") or ".blob." in host:
        return host.split(".", 1)[0]
    return parsed.path.strip("/").split("/", 1)[0] or host.split(".", 1)[0]


def _code(exc: aexc.HttpResponseError) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _deltas(progress: ProgressCallback | None) -> Callable[[int, int | None], None] | None:
    """The SDK reports bytes done so far (from several threads); the project's callback
    takes the bytes moved since the last call."""
    if progress is None:
        return None
    lock = threading.Lock()
    done = 0

    def hook(current: int, total: int | None) -> None:
        nonlocal done
        with lock:
            delta, done = current - done, max(done, current)
        if delta > 0:
            progress(delta)

    return hook
