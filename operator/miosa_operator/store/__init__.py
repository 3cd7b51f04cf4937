"""Artifact stores: one small write-once interface, a local-directory and an S3 backend,
and a router that picks the backend from the URI (``file://`` or ``s3://``)."""

from __future__ import annotations

from .base import (
    ArtifactNotFound,
    ArtifactStore,
    ObjectInfo,
    StoreAccessDenied,
    StoreError,
    TransientStoreError,
    join_uri,
    parse_uri,
)
from .filestore import FileStore
from .router import StoreRouter
from .s3store import S3Config, S3Store

__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "FileStore",
    "ObjectInfo",
    "S3Config",
    "S3Store",
    "StoreAccessDenied",
    "StoreError",
    "StoreRouter",
    "TransientStoreError",
    "join_uri",
    "parse_uri",
]
