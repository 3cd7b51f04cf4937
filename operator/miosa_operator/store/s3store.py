"""S3 (and S3-compatible) artifact store for ``s3://bucket/key`` URIs, through boto3.

Design decisions:

* **Write-once is the server's job.** ``put_if_absent`` sends ``If-None-Match: *`` so S3
  itself refuses to replace an existing key (412). No ``HEAD`` before it: on a new key (every
  first ingestion) it was a wasted round trip, two per version (benchmarks/); a retry of an
  ingestion whose release is already stored uploads it once more and gets the 412.  Old
  S3-compatible servers that ignore the header need ``head_before_put``
  (``MIOSA_S3_HEAD_BEFORE_PUT``), which skips the upload when the object is there.  A 409
  ``ConditionalRequestConflict`` (another conditional write to the same key in flight) is
  resolved with a ``HEAD``: "exists" means someone else created it (False); otherwise it is
  transient, because the other writer may still fail.
* **Portable client settings.** Path-style addressing by default and checksums only "when
  required": since botocore 1.36 the default adds CRC trailers with ``aws-chunked``
  encoding that many S3-compatible servers reject.
* **botocore retries, we classify.** botocore's "standard" retry mode already backs off on
  throttling and 5xx up to ``max_attempts``; whatever is left is mapped once, in
  ``classify_error``, onto ``TransientStoreError`` / ``StoreAccessDenied`` /
  ``ArtifactNotFound`` / ``StoreError``. Only "no such key" and a malformed request are
  about the object; a refusal of the operator's credentials (401/403, an expired token, a
  bucket policy), a missing bucket and missing credentials are the operator's to fix
  (``StoreAccessDenied``, retried), never a version's fault.
* **Streams stay streams.** ``open_read`` wraps the HTTP body so connection failures in the
  middle of a read surface as ``TransientStoreError``; uploads pass the file object to
  ``put_object`` (botocore rewinds seekable bodies on retry). Non-seekable sources are
  spooled to a temp file first so that rewinding is always possible.
* Single-request PUTs cap objects at 5 GiB, far above the bundle size limits.
"""

from __future__ import annotations

import email.utils
import io
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import boto3
import botocore.session
import botocore.utils
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from .base import (
    COPY_CHUNK,
    DEFAULT_CONTENT_TYPE,
    S3_SCHEME,
    ArtifactNotFound,
    ObjectInfo,
    StoreAccessDenied,
    StoreError,
    TransientStoreError,
    parse_uri,
)

_THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "TooManyRequests",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "Forbidden",
        "403",
        "401",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "TokenRefreshRequired",
        "InvalidToken",
        "InvalidClientTokenId",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
        "MissingSecurityHeader",
        "UnrecognizedClientException",
        "NoSuchBucket",
        "PermanentRedirect",
    }
)
_CONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
_CONDITION_CONFLICT = "ConditionalRequestConflict"
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError
    HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    IncompleteReadError,
    urllib3.exceptions.HTTPError,  # raw urllib3 errors that escape botocore while streaming
    OSError,  # socket errors from the same place
)


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    addressing_style: str = "path"
    connect_timeout: float = 5
    read_timeout: float = 60
    max_attempts: int = 3
    session_token: str | None = field(default=None, repr=False)
    head_before_put: bool = False  # for servers that ignore If-None-Match
    # An ingestion holds its GET connection while it reads; botocore's default pool of 10 made
    # the 16 handler threads queue for connections (benchmarks/).
    max_pool_connections: int = 32

    def __post_init__(self) -> None:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("S3 access key id and secret access key must be set together")
        if self.addressing_style not in ("path", "virtual", "auto"):
            raise ValueError(f"S3 addressing style must be path, virtual or auto, not {self.addressing_style!r}")

    def make_client(self) -> Any:
        """A thread-safe boto3 S3 client (``Any``: boto3 ships without type information)."""
        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            s3={"addressing_style": self.addressing_style},
            signature_version="s3v4",
            max_pool_connections=self.max_pool_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # One session of our own for every client: it loads the S3 model once (~15 MB per
        # session; the operator makes three clients).  Sessions are not thread-safe, clients
        # are: making a client holds the lock.
        with _SESSION_LOCK:
            return _session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                aws_session_token=self.session_token,
                config=config,
            )


_SESSION_LOCK = threading.Lock()
_SESSIONS: list[Any] = []


def _session() -> Any:
    if not _SESSIONS:
        core = botocore.session.get_session()
        # botocore parses every Last-Modified with dateutil: ~0.4 ms of CPU per HEAD and GET,
        # a fifth of what the operator spends on one (benchmarks/, throughput).
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
        _SESSIONS.append(boto3.session.Session(botocore_session=core))
    return _SESSIONS[0]


def parse_timestamp(value: str) -> datetime:
    """S3's timestamps: RFC 1123 in headers, ISO 8601 in XML; anything else as botocore would."""
    try:
        if value.endswith(" GMT"):
            return email.utils.parsedate_to_datetime(value)
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return botocore.utils.parse_timestamp(value)


def classify_error(exc: BaseException, what: str) -> StoreError:
    """Map a boto3/botocore/network exception onto the store's three error classes."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        code, status, message = _client_error_parts(exc)
        text = f"{what}: {code or status} {message}".rstrip()
        if code == "NoSuchBucket":
            return StoreAccessDenied(f"{what}: the bucket does not exist")
        if code in _DENIED_CODES or status in (401, 403):
            return StoreAccessDenied(f"{text} (check the operator's store credentials and bucket policy)")
        if code in _NOT_FOUND_CODES or status == 404:
            return ArtifactNotFound(text)
        if status >= 500 or status in (408, 429) or code in _THROTTLING_CODES:
            return TransientStoreError(text)
        return StoreError(text)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return StoreAccessDenied(
            f"{what}: no usable S3 credentials ({exc}; set MIOSA_S3_ACCESS_KEY_ID and "
            "MIOSA_S3_SECRET_ACCESS_KEY, or give the operator an IAM role)"
        )
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        return TransientStoreError(f"{what}: {exc}")
    if isinstance(exc, BotoCoreError):
        return StoreError(f"{what}: {exc}")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


def _client_error_parts(exc: ClientError) -> tuple[str, int, str]:
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    return str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0), str(error.get("Message", ""))


class _BodyReader(io.RawIOBase):
    """Raw reader over a botocore ``StreamingBody`` that reports failures as transient."""

    def __init__(self, body: Any, uri: str) -> None:
        super().__init__()
        self._body = body
        self._uri = uri

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data: bytes = self._body.read(len(view))
        except Exception as exc:  # noqa: BLE001 - everything here is a network failure
            raise classify_error(exc, f"reading {self._uri}") from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Store:
    """``ArtifactStore`` over S3 or any S3-compatible endpoint."""

    def __init__(self, config: S3Config | None = None, client: Any = None) -> None:
        self.config = config or S3Config()
        self._client = client if client is not None else self.config.make_client()

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        scheme, bucket, key = parse_uri(uri)
        if scheme != S3_SCHEME or bucket is None:
            raise StoreError(f"S3Store only handles s3:// URIs: {uri!r}")
        return bucket, key

    def _object(self, uri: str) -> tuple[str, str]:
        bucket, key = self._split(uri)
        if not key or key.endswith("/"):
            raise StoreError(f"S3 URI does not name an object: {uri!r}")
        return bucket, key

    # ------------------------------------------------------------------ reads

    def open_read(self, uri: str) -> BinaryIO:
        bucket, key = self._object(uri)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - classified below
            raise classify_error(exc, f"GET {uri}") from exc
        return io.BufferedReader(_BodyReader(response["Body"], uri), buffer_size=COPY_CHUNK)

    def head(self, uri: str) -> ObjectInfo | None:
        bucket, key = self._object(uri)
        try:
            response = self._client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            error = classify_error(exc, f"HEAD {uri}")
            if isinstance(error, ArtifactNotFound):
                self._check_bucket(bucket, uri)  # a HEAD's 404 has no body: key or bucket?
                return None
            raise error from exc
        return ObjectInfo(uri=uri, size=int(response["ContentLength"]))

    def _check_bucket(self, bucket: str, uri: str) -> None:
        """A missing bucket is the operator's to fix, not a missing object of the tenant's."""
        try:
            self._client.head_bucket(Bucket=bucket)
        except Exception as exc:  # noqa: BLE001
            error = classify_error(exc, f"HEAD {uri}")
            raise (
                StoreAccessDenied(f"HEAD {uri}: the bucket does not exist") if isinstance(error, ArtifactNotFound) else error
            ) from exc

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        bucket, prefix = self._split(prefix_uri)
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for entry in page.get("Contents", []):
                    yield ObjectInfo(uri=f"s3://{bucket}/{entry['Key']}", size=int(entry["Size"]))
        except Exception as exc:  # noqa: BLE001
            raise classify_error(exc, f"LIST {prefix_uri}") from exc

    # ------------------------------------------------------------------ writes

    def put_if_absent(
        self,
        uri: str,
        source: BinaryIO,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> bool:
        bucket, key = self._object(uri)
        if self.config.head_before_put and self.head(uri) is not None:
            return False
        if not _seekable(source):
            with tempfile.TemporaryFile(prefix="miosa-s3-spool-") as spool:
                _spool(source, spool)
                return self._put(uri, bucket, key, spool, size, content_type)
        return self._put(uri, bucket, key, source, size, content_type)

    def put_bytes_if_absent(self, uri: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        return self.put_if_absent(uri, io.BytesIO(data), size=len(data), content_type=content_type)

    def _put(self, uri: str, bucket: str, key: str, body: BinaryIO, size: int | None, content_type: str) -> bool:
        length = _remaining(body)
        if size is not None and size != length:
            raise StoreError(f"{uri}: source has {length} bytes, expected {size}; not stored")
        try:
            self._client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentLength=length, ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as exc:
            code, status, _ = _client_error_parts(exc)
            if code in _CONDITION_FAILED or status == 412:
                return False
            if code == _CONDITION_CONFLICT or status == 409:
                return self._resolve_conflict(uri, exc)
            raise classify_error(exc, f"PUT {uri}") from exc
        except Exception as exc:  # noqa: BLE001
            raise classify_error(exc, f"PUT {uri}") from exc
        return True

    def _resolve_conflict(self, uri: str, exc: ClientError) -> bool:
        if self.head(uri) is not None:
            return False
        raise TransientStoreError(f"PUT {uri}: concurrent conditional write in progress") from exc

    def delete(self, uri: str) -> bool:
        # S3 answers 204 whether or not the key existed; HEAD first to report what happened.
        if self.head(uri) is None:
            return False
        bucket, key = self._object(uri)
        try:
            self._client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise classify_error(exc, f"DELETE {uri}") from exc
        return True


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _remaining(stream: BinaryIO) -> int:
    """Bytes from the current position to the end, leaving the position unchanged."""
    start = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(start)
    return end - start


def _spool(source: BinaryIO, spool: BinaryIO) -> None:
    while chunk := source.read(COPY_CHUNK):
        spool.write(chunk)
    spool.seek(0)
