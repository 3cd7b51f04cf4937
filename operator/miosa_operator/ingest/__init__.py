"""Bundle ingestion: verify an uploaded static-site bundle in one streaming pass and
re-pack it into the canonical, deterministic ``tar.zst`` release. Pure logic: no
Kubernetes, no store; the caller supplies the streams."""

from __future__ import annotations

from .buildlog import BuildLog
from .bundle import (
    CANONICAL_FORMAT,
    BundleRejected,
    IngestResult,
    Manifest,
    Reason,
    ingest_bundle,
    normalise_member_path,
)
from .limits import IngestLimits

__all__ = [
    "CANONICAL_FORMAT",
    "BuildLog",
    "BundleRejected",
    "IngestLimits",
    "IngestResult",
    "Manifest",
    "Reason",
    "ingest_bundle",
    "normalise_member_path",
]
