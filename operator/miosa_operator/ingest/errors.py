"""The ways ingestion fails: a rejected bundle, or a failing stream of the caller.

The bottom of the ``ingest`` package: every other module raises these, so they live apart
from the public API module (``bundle`` re-exports ``Reason`` and ``BundleRejected``).
``Reason`` is the API's one table of condition reasons (``api.conditions``): a rejected
bundle's reason is what the version's ``Ready`` condition says.

Design decision: **the caller's streams are not the bundle.** An exception raised by the
caller's ``source`` or ``out`` (a store timeout, a full disk) must reach the caller unchanged,
never as a rejection. Those streams are read and written from inside tarfile and zstd, whose
own errors mean a broken bundle, so their exceptions travel as ``StreamFailure``
(``streams.RawInput``, the canonical writer's sink), which ``ingest_bundle`` and
``walk_bundle`` unwrap.
"""

from __future__ import annotations

from ..api.conditions import Reason

__all__ = ["BundleRejected", "Reason", "StreamFailure"]


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
