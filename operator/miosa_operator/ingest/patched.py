"""Whether this interpreter's tarfile carries the 2024-2025 security fixes.

The ingestion reader does not depend on them (``members``/``pax`` hand tarfile only what they
re-emit, and ``tests/unit/test_ingest_limits.py`` proves it on an unpatched 3.11.7), but the
image should not ship known holes either: its build runs ``python -m
miosa_operator.ingest.patched`` and fails on an interpreter without them. Debian ships the
fixes in the security updates of the suite's python3 (trixie: 3.13.5-2+deb13u5 has both),
so this checks behaviour, not a version number that Debian's backports would not match.
"""

from __future__ import annotations

import sys
import tarfile


def missing_fixes() -> list[str]:
    """The tarfile CVEs this interpreter is still open to."""
    missing = []
    # The fix replaced the backtracking regular expressions with a linear record parser.
    if not hasattr(tarfile, "_header_length_prefix_re"):
        missing.append("CVE-2024-6232 (quadratic pax header parsing; fixed in 3.11.10, 3.12.6)")
    try:
        tarfile.TarInfo()._block(-1)  # type: ignore[attr-defined]  # the private helper the fix changed
    except tarfile.InvalidHeaderError:  # type: ignore[attr-defined]  # not exported by the stubs
        pass
    else:
        missing.append("CVE-2025-8194 (negative member offsets; fixed in 3.11.14, 3.12.12, 3.13.6)")
    return missing


if __name__ == "__main__":
    open_to = missing_fixes()
    for cve in open_to:
        print(f"this Python's tarfile lacks the fix for {cve}", file=sys.stderr)
    sys.exit(1 if open_to else 0)
