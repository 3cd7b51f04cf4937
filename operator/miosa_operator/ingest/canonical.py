"""The canonical release: a deterministic ``tar.zst`` written as members are admitted.

``CanonicalWriter`` is the ``MemberSink`` that ``ingest_bundle`` walks a bundle into. Its
output goes through a hashing sink, so the canonical sha256 and size are known when the
archive is finished, without reading the release back.

Design decisions:

* **Deterministic output.** Members are re-packed in their original order with their
  mtime (whole seconds), uid/gid 0, empty owner names, modes 0644/0755, in PAX format via
  ``TarInfo.tobuf``, then zstd at a fixed level and worker count, with a frame checksum.
  The same input bytes therefore give byte-identical releases (for the same libzstd).
* A failure of the caller's ``out`` stream leaves as ``StreamFailure`` (see ``errors``), so
  zstd cannot mistake it for its own error and it is never reported as a broken bundle.
* The compressor writes nothing until the first member, so a writer created before the
  format checks leaves ``out`` untouched for bundles refused up front.
"""

from __future__ import annotations

import hashlib
import math
import tarfile
from typing import IO, BinaryIO, cast

import zstandard

from .common import BLOCK, CHUNK, RECORD, show
from .errors import BundleRejected, Reason, StreamFailure

CANONICAL_FORMAT = "tar.zst"
CANONICAL_ZSTD_LEVEL = 3
"""zstd's default: fast, and static sites are mostly text that compresses well at any level.
Changing it changes every canonical hash produced from then on."""

CANONICAL_ZSTD_THREADS = 1
"""One compression worker beside the walking thread: compression was half of ingestion's time
(benchmarks/: 0.66x -> 1.15x the zstd|sha256sum CLI pipeline on 256 MiB). libzstd's
multi-threaded output does not depend on timing, so releases stay deterministic; it differs
from single-threaded output, so changing this changes canonical hashes from then on."""

_MAX_MTIME = 8**11 - 1  # largest value of the ustar octal field: no pax header needed


class _HashingSink:
    """Where the compressor writes: hashes and counts the canonical bytes on their way out."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.count += len(data)
        try:
            self._out.write(data)
        except Exception as exc:  # noqa: BLE001 - re-raised unchanged by ingest_bundle
            raise StreamFailure(exc) from exc
        return len(data)

    def flush(self) -> None:
        try:
            self._out.flush()
        except Exception as exc:  # noqa: BLE001
            raise StreamFailure(exc) from exc

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class CanonicalWriter:
    """Writes the canonical tar (PAX headers from ``TarInfo.tobuf``) through zstd."""

    def __init__(self, out: BinaryIO) -> None:
        self._sink = _HashingSink(out)
        compressor = zstandard.ZstdCompressor(level=CANONICAL_ZSTD_LEVEL, write_checksum=True, threads=CANONICAL_ZSTD_THREADS)
        self._stream = compressor.stream_writer(cast(BinaryIO, self._sink), closefd=False)
        self._offset = 0

    def add_dir(self, path: str, mtime: float) -> None:
        self._header(path, tarfile.DIRTYPE, 0o755, 0, mtime)

    def add_file(self, path: str, mtime: float, size: int, data: IO[bytes]) -> None:
        self._header(path, tarfile.REGTYPE, 0o644, size, mtime)
        remaining = size
        while remaining:
            chunk = data.read(min(CHUNK, remaining))
            if not chunk:
                raise BundleRejected(Reason.CORRUPT_BUNDLE, f"the data of {show(path)} ends early (truncated?)")
            self._write(chunk)
            remaining -= len(chunk)
        self._pad_to(BLOCK)

    def finish(self) -> tuple[str, int]:
        """End the archive (two zero blocks, padded to a full record) and the zstd frame."""
        self._write(bytes(2 * BLOCK))
        self._pad_to(RECORD)
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._stream.close()
        self._sink.flush()
        return self._sink.hexdigest(), self._sink.count

    def _header(self, path: str, kind: bytes, mode: int, size: int, mtime: float) -> None:
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, _canonical_mtime(mtime)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))

    def _pad_to(self, unit: int) -> None:
        remainder = self._offset % unit
        if remainder:
            self._write(bytes(unit - remainder))

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._offset += len(data)


def _canonical_mtime(mtime: float) -> int:
    """Whole seconds within the ustar field's range, so no pax ``mtime`` record is needed."""
    if not math.isfinite(mtime):
        return 0
    return min(max(int(mtime), 0), _MAX_MTIME)
