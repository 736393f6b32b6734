"""S3 (and MinIO, and any S3-compatible store) through boto3's transfer manager.

Uploads are multipart with parallel parts above one part size, and are
conditional (`If-None-Match: *` on PutObject and CompleteMultipartUpload), so
an existing object is never replaced, even by a concurrent writer. A failed
multipart upload is aborted by the transfer manager, so nothing partial is
visible under the final key. The sha256 is also stored as object metadata.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from control_plane.core.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from control_plane.core.hashing import ProgressCallback
from control_plane.storage.base import ObjectInfo, StorageBackend, check_key, writing_to

MIB = 1024 * 1024
_CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or configure ~/.aws"
)


class S3Backend(StorageBackend):
    """Objects under `bucket`; parts of `chunk_bytes`, `max_concurrency` at a time."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        chunk_bytes: int = 64 * MIB,
        max_concurrency: int = 8,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"mode": "standard"},  # 3 attempts; AWS_MAX_ATTEMPTS overrides
                max_pool_connections=max(10, max_concurrency + 2),
                connect_timeout=10,
                read_timeout=60,
            ),
        )
        for operation in ("PutObject", "CompleteMultipartUpload"):
            self.client.meta.events.register(f"before-sign.s3.{operation}", _only_if_absent)
        self.transfer = TransferConfig(
            multipart_threshold=chunk_bytes,
            multipart_chunksize=chunk_bytes,
            max_concurrency=max_concurrency,
            use_threads=True,
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def upload(
        self, source: Path, key: str, *, sha256: str, progress: ProgressCallback | None = None
    ) -> None:
        with self._errors(key):
            self.client.upload_file(
                str(source),
                self.bucket,
                check_key(key),
                ExtraArgs={
                    "Metadata": {"sha256": sha256},
                    "ContentType": "application/octet-stream",
                },
                Callback=progress,
                Config=self.transfer,
            )

    def download(self, key: str, dest: Path, *, progress: ProgressCallback | None = None) -> None:
        with self._errors(key), writing_to(dest):
            self.client.download_file(
                self.bucket, check_key(key), str(dest), Callback=progress, Config=self.transfer
            )

    def stat(self, key: str) -> ObjectInfo:
        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            sha256=head.get("Metadata", {}).get("sha256"),
            modified=head["LastModified"].timestamp(),
        )

    def touch(self, key: str) -> None:
        """A copy onto itself (same bytes, same metadata) renews LastModified."""
        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=check_key(key))
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                Metadata=head.get("Metadata", {}),
                MetadataDirective="REPLACE",
            )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        modified=item["LastModified"].timestamp(),
                    )

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Map boto3's errors to the project's, naming the bucket, key or endpoint."""
        try:
            yield
        except Exception as exc:
            cause = exc
            if isinstance(exc, boto3.exceptions.S3UploadFailedError) and exc.__context__:
                cause = exc.__context__  # boto3 wraps the ClientError without `from`
            translated = self._translate(cause, key)
            if translated is None:
                raise
            raise translated from exc

    def _bucket_exists(self) -> bool:
        """False only when the store says the bucket is not there (any doubt: True)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code", "")) not in _NOT_FOUND
        except botocore.exceptions.BotoCoreError:
            return True
        return True

    def _translate(self, exc: BaseException, key: str) -> StorageError | None:
        where = f"s3://{self.bucket}/{key}"
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return StorageError("no AWS credentials were found.", hint=_CREDENTIALS_HINT)
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            endpoint = self.endpoint_url or exc.kwargs.get("endpoint_url", "AWS S3")
            return StorageError(
                f"cannot reach the S3 endpoint {endpoint}.",
                hint="check endpoint_url in .nexusrc and that the server is running",
            )
        if isinstance(exc, botocore.exceptions.ClientError):
            error = _client_error(exc, self.bucket, key, where)
            if isinstance(error, ObjectNotFoundError) and not self._bucket_exists():
                # A HEAD has no body to say which is missing: a 404 may be the bucket's.
                return _missing_bucket(self.bucket)
            return error
        if isinstance(exc, boto3.exceptions.RetriesExceededError):
            return StorageError(
                f"the transfer of {where} kept failing, retried: "
                f"{str(exc.last_exception).rstrip('.')}.",
                hint="check the network path to the store; the command can be run again",
            )
        module = type(exc).__module__
        if isinstance(exc, OSError) or module.startswith(("botocore", "boto3", "s3transfer")):
            return StorageError(f"the transfer of {where} failed: {exc}.")
        return None


def _client_error(
    exc: botocore.exceptions.ClientError, bucket: str, key: str, where: str
) -> StorageError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return _missing_bucket(bucket)
    if code in ("NoSuchKey", *_NOT_FOUND):
        return ObjectNotFoundError(f"{where} does not exist.")
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StorageError(f"access to {where} was denied ({code}).", hint=_CREDENTIALS_HINT)
    if code in ("PreconditionFailed", "412") or status == 412:
        return ObjectExistsError(f"{where} already exists; it will not be overwritten.")
    message = str(exc.response.get("Error", {}).get("Message", exc)).rstrip(".")
    retried = " (retried)" if code == "SlowDown" or (status or 0) >= 500 else ""
    return StorageError(f"S3 refused the request for {where}{retried}: {code} {message}.")


_NOT_FOUND = ("404", "NotFound", "NoSuchBucket")


def _missing_bucket(bucket: str) -> StorageError:
    return StorageError(
        f"the bucket '{bucket}' does not exist.",
        hint="create it, or fix 'bucket' in .nexusrc (or NEXUS_BUCKET)",
    )


def _only_if_absent(request: Any, **_: Any) -> None:
    request.headers["If-None-Match"] = "*"
