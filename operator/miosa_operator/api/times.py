"""Time as the Kubernetes API writes it: RFC 3339 in UTC, to the second (``...T12:00:00Z``).

One writer and one reader for every status timestamp, annotation and event time, so the
controllers, the HTTP API and the plugin agree on what they read back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``moment`` as the API server's timestamps: UTC, whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string (any offset, optional fraction), or None."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rfc3339(value: Any) -> str | None:
    """``value`` (a datetime or an RFC 3339 string) in the API server's form, or None."""
    moment = parse_time(value)
    return iso(moment) if moment else None
