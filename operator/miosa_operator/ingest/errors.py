"""The ways ingestion fails: a rejected bundle, or a failing stream of the caller.

The bottom of the ``ingest`` package: every other module raises these, so they live apart
from the public API module (``bundle`` re-exports ``Reason`` and ``BundleRejected``).

Design decision: **the caller's streams are not the bundle.** An exception raised by the
caller's ``source`` or ``out`` (a store timeout, a full disk) must reach the caller unchanged,
never as a rejection. Those streams are read and written from inside tarfile and zstd, whose
own errors mean a broken bundle, so their exceptions travel as ``StreamFailure``
(``streams.RawInput``, the canonical writer's sink), which ``ingest_bundle`` and
``walk_bundle`` unwrap.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Kubernetes condition reasons for a rejected bundle."""

    CHECKSUM_MISMATCH = "ChecksumMismatch"
    NOT_AN_ARCHIVE = "NotAnArchive"
    CORRUPT_BUNDLE = "CorruptBundle"
    EMPTY_BUNDLE = "EmptyBundle"
    MISSING_ENTRYPOINT = "MissingEntrypoint"
    UNSAFE_MEMBER_TYPE = "UnsafeMemberType"
    UNSAFE_PATH = "UnsafePath"
    DUPLICATE_MEMBER = "DuplicateMember"
    TOO_MANY_MEMBERS = "TooManyMembers"
    FILE_TOO_LARGE = "FileTooLarge"
    BUNDLE_TOO_LARGE = "BundleTooLarge"
    COMPRESSION_RATIO_EXCEEDED = "CompressionRatioExceeded"


class BundleRejected(Exception):
    """The bundle can never become a release; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = str(reason)
        self.message = message


class StreamFailure(Exception):
    """Carries an exception of the caller's ``source`` or ``out`` stream through tarfile and
    zstd, so that it is neither mistaken for a broken bundle nor altered
    (``ingest_bundle`` re-raises the original)."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original
