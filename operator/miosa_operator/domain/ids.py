"""Public ids: a prefix and a ULID (``ver_01H…``, ``dep_01H…``), as the seed's API shows them.

ULIDs sort by creation time and need no coordination; 26 Crockford base32 characters of a
48-bit millisecond timestamp and 80 random bits.  Fourteen lines do not justify a dependency.
"""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None, randomness: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rnd = secrets.randbits(80) if randomness is None else randomness
    value = (ms << 80) | rnd
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_version_id() -> str:
    return f"ver_{ulid()}"


def new_deployment_id() -> str:
    return f"dep_{ulid()}"
