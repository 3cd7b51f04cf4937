"""One ``ArtifactStore`` for the whole operator, choosing the backend from the URI scheme.

Design decisions:

* The router *is* an ``ArtifactStore``: controllers take a store and never ask which
  backend they got, so tests and laptops run on ``file://`` and clusters on ``s3://``
  with the same code path.
* S3 is optional. Without an S3 backend an ``s3://`` URI is a clear, permanent
  ``StoreError`` (a configuration problem that retrying will not fix).
* ``from_settings`` builds the S3 backend when the settings mention S3 at all (an endpoint,
  credentials, IAM-role or profile variables); ``MIOSA_FILE_ROOT`` (optional) confines
  ``file://`` URIs to one directory tree, so tenants cannot point a version at arbitrary
  files of the operator pod.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from .base import (
    DEFAULT_CONTENT_TYPE,
    FILE_SCHEME,
    S3_SCHEME,
    ArtifactStore,
    ObjectInfo,
    StoreError,
    join_uri,
    parse_uri,
)
from .filestore import FileStore
from .s3store import S3Store

if TYPE_CHECKING:  # settings imports this package
    from ..settings import Settings

__all__ = ["StoreRouter", "join_uri", "parse_uri"]


class StoreRouter:
    """Dispatches every call to the file or S3 backend by URI scheme."""

    def __init__(self, file_store: ArtifactStore, s3_store: ArtifactStore | None = None) -> None:
        self.file_store = file_store
        self.s3_store = s3_store

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreRouter:
        s3 = S3Store(settings.s3_config) if settings.s3_wanted else None
        return cls(FileStore(settings.file_root), s3)

    def store_for(self, uri: str) -> ArtifactStore:
        scheme, _, _ = parse_uri(uri)
        if scheme == FILE_SCHEME:
            return self.file_store
        if scheme == S3_SCHEME and self.s3_store is not None:
            return self.s3_store
        raise StoreError(
            f"{uri}: S3 is not configured for this operator "
            "(set MIOSA_S3_ENDPOINT and MIOSA_S3_ACCESS_KEY_ID/MIOSA_S3_SECRET_ACCESS_KEY, or AWS_* variables)"
        )

    def open_read(self, uri: str) -> BinaryIO:
        return self.store_for(uri).open_read(uri)

    def put_if_absent(
        self,
        uri: str,
        source: BinaryIO,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> bool:
        return self.store_for(uri).put_if_absent(uri, source, size=size, content_type=content_type)

    def put_bytes_if_absent(self, uri: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        return self.store_for(uri).put_bytes_if_absent(uri, data, content_type=content_type)

    def head(self, uri: str) -> ObjectInfo | None:
        return self.store_for(uri).head(uri)

    def delete(self, uri: str) -> bool:
        return self.store_for(uri).delete(uri)

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        return self.store_for(prefix_uri).list(prefix_uri)
