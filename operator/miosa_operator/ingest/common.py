"""Unit sizes and message helpers shared by every stage of ingestion.

``CHUNK`` bounds every read and every decompressed chunk, so memory use does not depend on
the bundle. ``BLOCK`` and ``RECORD`` are tar's own units.
"""

from __future__ import annotations

import tarfile

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE


def show(name: str) -> str:
    """A member name safe to put in a message: quoted, escaped, at most 200 characters."""
    return repr(name if len(name) <= 200 else name[:200] + "...")


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
