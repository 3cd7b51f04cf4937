"""Names of the objects we create, kept within Kubernetes' length limits.

Object names may be 253 characters but label values and Service names only 63, so long
names are cut and made unique again with a short hash of the full name.
"""

from __future__ import annotations

import hashlib


def bounded(name: str, suffix: str = "", limit: int = 63) -> str:
    full = f"{name}-{suffix}" if suffix else name
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    keep = limit - len(digest) - len(suffix) - 2
    head = name[:keep].rstrip("-.")
    return f"{head}-{digest}-{suffix}" if suffix else f"{head}-{digest}"
