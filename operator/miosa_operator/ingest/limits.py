"""Resource caps for bundle ingestion.

Design decisions:

* Every cap is checked while streaming, from tar headers where possible, so a hostile bundle
  is refused as soon as it declares something too big, before its bytes are read.
* The compression-ratio cap (decompressed / compressed bytes so far) only starts counting
  after 1 MiB of output: tiny, very compressible bundles (a handful of HTML files) are
  legitimate and would otherwise trip it.
* **Memory depends on configuration, never on the bundle.** What ingestion keeps per member
  is bounded by ``max_members`` x ``max_path_depth`` (see ``members``), a zstd frame may not
  ask for a window above ``max_zstd_window_bytes`` (the decoder allocates the window), and
  every read is bounded by ``common.CHUNK``. ``docs/benchmarks.md`` has the measured peaks.
* Byte sizes in the environment accept plain integers or Kubernetes-style binary suffixes
  (``512Mi``, ``2Gi``) because that is how the Helm chart's users write them
  (``parse_size``, used by ``miosa_operator.settings``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

RATIO_GRACE_BYTES = MiB
"""Decompressed bytes before the compression-ratio cap applies."""

_SIZE = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|Ti)?\s*$")
_UNITS = {None: 1, "Ki": KiB, "Mi": MiB, "Gi": GiB, "Ti": 1 << 40}


def parse_size(text: str) -> int:
    """``"536870912"`` or ``"512Mi"`` -> 536870912."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a byte size: {text!r} (use an integer, optionally with Ki/Mi/Gi/Ti)")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class IngestLimits:
    max_members: int = 10_000
    max_file_bytes: int = 512 * MiB
    max_total_bytes: int = 2 * GiB
    max_compression_ratio: float = 200.0
    max_path_bytes: int = 1024
    max_bundle_bytes: int = 2 * GiB
    max_path_depth: int = 32
    """Components of a member's path (``a/b/c.html`` has 3)."""
    max_zstd_window_bytes: int = 8 * MiB
    """Largest window a zstd frame may declare: what the decoder must allocate (zstd -19 uses
    8 MiB; ``--long`` and ``--ultra`` use up to 128 MiB or more)."""

    def __post_init__(self) -> None:
        for name in (
            "max_members",
            "max_file_bytes",
            "max_total_bytes",
            "max_path_bytes",
            "max_bundle_bytes",
            "max_path_depth",
            "max_zstd_window_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if not self.max_compression_ratio >= 1:
            raise ValueError(f"max_compression_ratio must be >= 1, not {self.max_compression_ratio}")
