"""The artifact store contract shared by every backend, plus URI helpers.

Design decisions:

* **Write once.** The only write is ``put_if_absent``: releases and build logs are immutable,
  so a second writer (a retried reconcile, a second operator replica) must never replace
  what the first one stored. Backends implement it with an atomic primitive (``link(2)``
  for files, ``If-None-Match: *`` for S3) instead of check-then-write.
* **Error classes by who must act.** Callers need these decisions: retry later
  (``TransientStoreError``: timeouts, connection failures, 5xx, throttling), retry later and
  tell a person (``StoreAccessDenied``, a ``TransientStoreError``: the store refuses the
  operator's credentials, a bucket or directory is missing or not writable — fixing it lets
  the same work go on), report "not there" (``ArtifactNotFound``), or fail for good
  (``StoreError``: a URI that can never name an object). Only the last two can be a
  version's own fault; backends map their native errors onto these and nothing else leaks.
* **Streams, not bytes.** Bundles can be gigabytes; ``open_read`` returns a reader and
  ``put_if_absent`` takes one, so nothing holds a whole object in memory.
* **URIs are literal.** ``s3://bucket/key`` and ``file:///abs/path`` are split by hand, not
  with ``urllib.parse``: object keys may legally contain ``?``, ``#`` or ``%`` and must not be
  reinterpreted as query strings or percent-escapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

DEFAULT_CONTENT_TYPE = "application/octet-stream"
COPY_CHUNK = 1 << 20
"""Read/write granularity for streaming copies: large enough that per-call overhead vanishes."""


class StoreError(Exception):
    """A permanent store problem (bad URI, access denied, misconfiguration...): do not retry."""


class TransientStoreError(StoreError):
    """Timeouts, connection failures, 5xx, throttling: the caller retries with backoff."""


class StoreAccessDenied(TransientStoreError):
    """The store refuses the operator (credentials, permissions, a missing bucket): retried,
    but a person must fix something first."""


class ArtifactNotFound(StoreError):
    """The object does not exist (yet)."""


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int


@runtime_checkable
class ArtifactStore(Protocol):
    def open_read(self, uri: str) -> BinaryIO:
        """A streaming reader; raises ``ArtifactNotFound`` if the object does not exist."""
        ...

    def put_if_absent(
        self,
        uri: str,
        source: BinaryIO,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> bool:
        """Store ``source`` at ``uri`` unless something is there already.

        Returns True if this call created the object, False if an object already existed;
        an existing object is never overwritten. ``size``, when given, is checked.
        """
        ...

    def put_bytes_if_absent(self, uri: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool: ...

    def head(self, uri: str) -> ObjectInfo | None: ...

    def delete(self, uri: str) -> bool:
        """True if something was deleted, False if there was nothing to delete."""
        ...

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        """Objects whose URI starts with ``prefix_uri`` (string prefix, as in S3), sorted."""
        ...


# --------------------------------------------------------------------------- URIs

FILE_SCHEME = "file"
S3_SCHEME = "s3"


def parse_uri(uri: str) -> tuple[str, str | None, str]:
    """Split a store URI into ``(scheme, bucket or None, key or absolute path)``.

    ``file:///abs/path`` (and ``file://localhost/abs/path``) give ``("file", None, "/abs/path")``;
    ``s3://bucket/some/key`` gives ``("s3", "bucket", "some/key")``; the key may be empty
    (``s3://bucket/`` is a valid list prefix).
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise StoreError(f"not a store URI (expected s3://bucket/key or file:///path): {uri!r}")
    if "\x00" in uri:
        raise StoreError(f"URI contains a NUL byte: {uri!r}")
    scheme = scheme.lower()
    if scheme == FILE_SCHEME:
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            raise StoreError(f"file URIs need an absolute path (file:///path): {uri!r}")
        return FILE_SCHEME, None, rest
    if scheme == S3_SCHEME:
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise StoreError(f"S3 URI without a bucket: {uri!r}")
        return S3_SCHEME, bucket, key
    raise StoreError(f"unsupported URI scheme {scheme!r} (use s3:// or file://): {uri!r}")


def join_uri(base: str, *parts: str) -> str:
    """Append path segments to a URI with exactly one ``/`` between them.

    Segments are ids and file names chosen by the operator; one that is empty or contains
    a ``.``/``..`` component is a bug or an injection attempt, so it raises ``StoreError``.
    """
    head = base.rstrip("/")
    if head.endswith(":"):  # "file:///" is the root directory, keep its "//"
        head += "//"
    segments = [head]
    for part in parts:
        stripped = part.strip("/")
        components = stripped.split("/")
        if not stripped or any(c in ("", ".", "..") for c in components):
            raise StoreError(f"invalid URI segment {part!r}")
        segments.append(stripped)
    return "/".join(segments)
