"""A bucket as a Store: S3, or any store that speaks its API.

What the output path asks of it (store.py): create an object only if its name is free, and say
what an existing object is (size, our checksum, the window's id); no rename, no listing, no
directory to sync. Configured the AWS way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION), with object_store's
AWS_ALLOW_HTTP=true required for a plain-http endpoint.

Two clients, each for what it does right. obstore (Rust object_store) makes the single-PUT
conditional creates and the HEADs: its signing and HTTP run without the GIL, and take a fraction
of boto3's CPU per PUT (docs/performance.md), which matters because the uploads share the machine
with ingest. But it makes a conditional create only as one PUT of the whole object in memory; S3
also takes `If-None-Match` on CompleteMultipartUpload, which boto3 sends, so windows of
--multipart-threshold or more go up in parts through boto3, streamed from their file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, BinaryIO

import boto3
import obstore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import AlreadyExistsError
from obstore.store import S3Store

from batched_event_api.config import DEFAULTS, BucketUrl
from batched_event_api.output.store import Finished, Identity, StoreError

CHECKSUM_KEY = "sha256"  # object metadata (x-amz-meta-sha256): the window file's SHA-256
WINDOW_ID_KEY = "window-id"  # object metadata (x-amz-meta-window-id): the id the writer gave the window


class S3Bucket:
    """A bucket (and prefix) as a Store."""

    def __init__(
        self,
        url: BucketUrl,
        *,
        multipart_from: int = DEFAULTS.multipart_threshold,
        part_size: int = DEFAULTS.multipart_chunksize,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.location = url
        self.url = str(url)  # for log lines
        self.multipart_from = multipart_from
        self.part_size = max(part_size, 5 * 1024 * 1024)  # S3's smallest part but the last
        endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
        allow_http = environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true")
        if endpoint and endpoint.startswith("http://") and not allow_http:
            raise ValueError(f"the endpoint {endpoint} is plain http: set AWS_ALLOW_HTTP=true to allow it")
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # Keys from these variables when set, else from each client's own chain (profile, instance role).
        options: dict[str, Any] = {"endpoint": endpoint} if endpoint else {}
        keys: dict[str, Any] = {
            name: environ[variable]
            for name, variable in (
                ("access_key_id", "AWS_ACCESS_KEY_ID"),
                ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                ("token", "AWS_SESSION_TOKEN"),
            )
            if environ.get(variable)
        }
        self._store = S3Store(
            url.bucket,
            region=region,
            **keys,
            **options,
            virtual_hosted_style_request=not endpoint,
            client_options={
                "allow_http": allow_http,
                "connect_timeout": timedelta(seconds=5),
                "timeout": timedelta(seconds=60),
            },
            # A few quick retries per request; the uploader's own backoff handles an outage.
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=30),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
            # Checksums only where S3 requires them: several S3-compatible stores reject the
            # SDK's newer default trailing checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint else {},
        )
        session = boto3.session.Session(
            aws_access_key_id=keys.get("access_key_id"),
            aws_secret_access_key=keys.get("secret_access_key"),
            aws_session_token=keys.get("token"),
            region_name=region,
        )
        self._s3 = session.client("s3", endpoint_url=endpoint, config=config)

    def key(self, name: str) -> str:
        return self.location.prefix + name

    def create(self, name: str, window: Finished) -> bool:
        """Create object `name` if that name is free: in one PUT below `multipart_from` bytes, else
        in parts streamed from the window's file. The window's SHA-256 and id go into the object's
        metadata. True when created, False when the name is taken (by any object); StoreError when
        the store fails."""
        metadata = {CHECKSUM_KEY: window.sha256, **({WINDOW_ID_KEY: window.window_id} if window.window_id else {})}
        if window.size >= self.multipart_from:
            extra: dict[str, Any] = {"ContentType": window.content_type, "Metadata": metadata}
            if window.content_encoding:
                extra["ContentEncoding"] = window.content_encoding
            return self._create_in_parts(name, window.file, extra)
        data = window.data if window.data is not None else window.file.read()
        attributes = {"Content-Type": window.content_type, **metadata}
        if window.content_encoding:
            attributes["Content-Encoding"] = window.content_encoding
        try:
            obstore.put(self._store, self.key(name), data, mode="create", attributes=attributes)
        except AlreadyExistsError:
            return False
        except Exception as exc:  # obstore's errors: the store failed or refused
            raise StoreError(f"PutObject: {type(exc).__name__}: {_first_line(exc)}") from None
        return True

    def identity(self, name: str) -> Identity | None:
        """Size, checksum and window id of object `name`, or None when there is none."""
        try:
            head = obstore.get(self._store, self.key(name), options={"head": True})
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"HeadObject: {type(exc).__name__}: {_first_line(exc)}") from None
        return Identity(head.meta["size"], head.attributes.get(CHECKSUM_KEY), head.attributes.get(WINDOW_ID_KEY))

    def _call(self, operation: str, *, tolerated: int = 0, **params: Any) -> Any:
        """One S3 request: its answer, or None for the `tolerated` status (412: the name is taken;
        404: no such object); any other failure is a StoreError naming the operation and code."""
        try:
            return getattr(self._s3, operation)(**params)
        except ClientError as exc:
            if _status(exc) == tolerated:
                return None
            raise StoreError(_describe(exc)) from None
        except BotoCoreError as exc:
            raise StoreError(str(exc)) from None

    def _create_in_parts(self, name: str, body: BinaryIO, extra: dict[str, Any]) -> bool:
        """A multipart upload streamed from the file, one part read at a time; completed
        only if the name is free (If-None-Match on the completion), aborted otherwise."""
        where: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.key(name)}
        upload = self._call("create_multipart_upload", **where, **extra)["UploadId"]
        created = False
        try:
            parts: list[dict[str, Any]] = []
            while chunk := body.read(self.part_size):
                number = len(parts) + 1
                answer = self._call("upload_part", **where, UploadId=upload, PartNumber=number, Body=chunk)
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            created = (
                self._call(
                    "complete_multipart_upload",
                    tolerated=412,
                    **where,
                    UploadId=upload,
                    IfNoneMatch="*",
                    MultipartUpload={"Parts": parts},
                )
                is not None
            )
            return created
        finally:
            if not created:  # best effort: the bucket's lifecycle rule for incomplete uploads cleans up
                try:
                    self._call("abort_multipart_upload", **where, UploadId=upload)
                except StoreError:
                    pass


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _describe(exc: ClientError) -> str:
    """The operation and the store's error code and message (never a key or a signature)."""
    error = exc.response.get("Error", {})
    return f"{exc.operation_name}: {error.get('Code', _status(exc))} {error.get('Message', '')}".strip()
