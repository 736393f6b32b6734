"""Google Cloud Storage through google-cloud-storage.

Uploads are resumable in `multipart_chunk_mb` chunks and conditional on the
object not existing (`if_generation_match=0`), so nothing is overwritten and
an interrupted upload leaves no object. STORAGE_EMULATOR_HOST is honoured as
the library does (anonymous credentials).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.cloud import storage

from control_plane.core.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from control_plane.core.hashing import ProgressCallback
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key, writing_to

MIB = 1024 * 1024
_CHUNK_UNIT = 256 * 1024  # GCS resumable chunks are multiples of 256 KiB
_CREDENTIALS_HINT = (
    "set GOOGLE_APPLICATION_CREDENTIALS or run 'gcloud auth application-default login'"
)


class GCSBackend(StorageBackend):
    """Objects in `bucket`, uploaded in resumable chunks of about `chunk_bytes`."""

    def __init__(self, bucket: str, *, chunk_bytes: int = 64 * MIB) -> None:
        self.bucket_name = bucket
        self.chunk_size = max(_CHUNK_UNIT, chunk_bytes // _CHUNK_UNIT * _CHUNK_UNIT)
        with self._errors(""):
            self.client = storage.Client()
        self.bucket = self.client.bucket(self.bucket_name)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{key}"

    def upload(
        self, source: Path, key: str, *, sha256: str, progress: ProgressCallback | None = None
    ) -> None:
        blob = self.bucket.blob(check_key(key), chunk_size=self.chunk_size)
        blob.metadata = {"sha256": sha256}
        size = source.stat().st_size
        if self.bucket.get_blob(key) is not None:
            # The generation precondition below is the atomic guard on real GCS; this early
            # check gives the same answer on emulators that ignore preconditions.
            raise ObjectExistsError(f"{self.uri(key)} already exists; it will not be overwritten.")
        with self._errors(key), source.open("rb") as raw:
            reader = _Counting(raw, progress)
            blob.upload_from_file(
                reader,
                size=size,
                content_type="application/octet-stream",
                if_generation_match=0,
                checksum=None,
            )

    def download(self, key: str, dest: Path, *, progress: ProgressCallback | None = None) -> None:
        blob = self.bucket.blob(check_key(key), chunk_size=self.chunk_size)
        with self._errors(key), writing_to(dest), dest.open("wb") as raw:
            blob.download_to_file(_Counting(raw, progress), checksum=None)

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            blob = self.bucket.get_blob(check_key(key))
        if blob is None:
            raise ObjectNotFoundError(f"{self.uri(key)} does not exist.")
        return ObjectInfo(
            key=key,
            size=int(blob.size or 0),
            sha256=(blob.metadata or {}).get("sha256"),
            modified=_modified(blob),
        )

    def touch(self, key: str) -> None:
        """A metadata update renews the object's `updated` time; the bytes stay."""
        with self._errors(key):
            blob = self.bucket.get_blob(check_key(key))
            if blob is None:
                raise ObjectNotFoundError(f"{self.uri(key)} does not exist.")
            blob.metadata = {**(blob.metadata or {}), "nexus-touched": str(time.time())}
            blob.patch()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._errors(prefix or "/"):
            for blob in self.client.list_blobs(self.bucket_name, prefix=prefix or None):
                yield ObjectInfo(key=blob.name, size=int(blob.size or 0), modified=_modified(blob))

    def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectNotFoundError), self._errors(key):
            self.bucket.blob(check_key(key)).delete()

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        where = self.uri(key)
        try:
            yield
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise StorageError(
                "no Google Cloud credentials were found.", hint=_CREDENTIALS_HINT
            ) from exc
        except gexc.PreconditionFailed as exc:
            raise ObjectExistsError(f"{where} already exists; it will not be overwritten.") from exc
        except gexc.NotFound as exc:
            if "bucket" in str(exc).lower() and "object" not in str(exc).lower():
                raise StorageError(
                    f"the bucket '{self.bucket_name}' does not exist.",
                    hint="create it, or fix 'bucket' in .nexusrc",
                ) from exc
            raise ObjectNotFoundError(f"{where} does not exist.") from exc
        except (gexc.Forbidden, gexc.Unauthorized) as exc:
            raise StorageError(f"access to {where} was denied.", hint=_CREDENTIALS_HINT) from exc
        except requests.exceptions.ConnectionError as exc:
            raise StorageError(
                f"cannot reach Google Cloud Storage at {self.client._connection.API_BASE_URL}.",
                hint="check the network, or STORAGE_EMULATOR_HOST for an emulator",
            ) from exc
        except (gexc.GoogleAPIError, requests.exceptions.RequestException) as exc:
            raise StorageError(f"the transfer of {where} failed: {exc}.") from exc


class _Counting(io.RawIOBase):
    """A file wrapper that reports bytes read or written to a progress callback."""

    def __init__(self, inner: Any, progress: ProgressCallback | None) -> None:
        self._inner = inner
        self._progress = progress

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._inner.seekable())

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._inner.read(size)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def write(self, data: Any) -> int:
        written = int(self._inner.write(data))
        if self._progress is not None:
            self._progress(written)
        return written


def _modified(blob: Any) -> float | None:
    moment = blob.updated or blob.time_created
    return moment.timestamp() if moment is not None else None
