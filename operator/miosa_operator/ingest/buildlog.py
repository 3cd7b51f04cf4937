"""The human-readable build log stored next to each release.

Design decisions:

* One line per event, prefixed with an RFC 3339 UTC timestamp with milliseconds and two
  spaces (``2026-05-14T18:19:48.123Z  message``): sortable, greppable, and unambiguous
  across operator replicas in different time zones.
* The clock is injected so tests (and the controller's own clock) give reproducible logs.
* Messages can quote names from untrusted bundles, so control characters are escaped
  (``\\x1b``...) and a multi-line message becomes several timestamped lines: nobody can
  forge a log line or smuggle terminal escapes into ``kubectl miosa logs``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ..api.times import utcnow
from ..api.types import Clock

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339, UTC, millisecond precision; a naive datetime is taken to be UTC already."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class BuildLog:
    """Collects timestamped lines; ``render`` gives the UTF-8 text to store."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock
        self._lines: list[str] = []

    def line(self, message: str) -> None:
        stamp = format_timestamp(self._clock())
        for part in message.replace("\r\n", "\n").split("\n"):
            self._lines.append(f"{stamp}  {_CONTROL.sub(_escape, part)}")

    __call__ = line  # so a BuildLog can be passed wherever a ``log`` callable is expected

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def render(self) -> bytes:
        return "".join(f"{line}\n" for line in self._lines).encode("utf-8", "backslashreplace")
