"""From the raw upload to the decompressed tar stream that ``tarfile`` reads.

The first three stages of a walk (see ``bundle``):

1. ``RawInput``: every raw byte is hashed (sha256), counted and capped, including bytes
   after the end of the archive (the input is always drained, so the checksum really covers
   the whole upload). A failure of the caller's ``source`` leaves as ``StreamFailure``.
2. A decoder picked from the magic bytes (zstd ``28 B5 2F FD``, gzip ``1F 8B``, tar =
   ``ustar`` at offset 257) by ``detect_format`` and ``make_decoder``: zstd, gzip or plain.
   All hand out bounded chunks (at most ``CHUNK``), so a decompression bomb never sits in
   memory.
3. ``TarFeed``: the decompressed stream as seen by ``tarfile`` in stream mode (``r|``),
   enforcing the compression-ratio cap as the stream progresses.

Decoders never decide on their own that the input ended badly: after the end,
``Decoder.problem()`` says whether the compressed stream stopped cleanly, and the walk decides
when to report it (only once the checksum matched). The zstd decoder relies on
``zstdframes.ZstdFrameTracker`` for that, because libzstd's streaming reader reports a cut-off
frame as a clean end of data. The same tracker reports each frame's window size before the
decoder sees the frame, so a frame that would make libzstd allocate more than
``max_zstd_window_bytes`` is ``ZstdWindowTooLarge`` (libzstd is also told the limit).

Nothing here echoes the bundle's bytes: a message says what is wrong, never what the bytes
were (another tenant's object must not become readable through a condition).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol, cast

import zstandard

from .common import BLOCK, CHUNK, human
from .errors import BundleRejected, Reason, StreamFailure
from .limits import RATIO_GRACE_BYTES, IngestLimits
from .zstdframes import ZSTD_MAGIC, ZSTD_SKIPPABLE, ZstdFrameTracker

_GZIP_MAGIC = b"\x1f\x8b"

# --------------------------------------------------------------------------- raw input


class RawInput:
    """Every byte of the source passes through here: hashed, counted and capped."""

    def __init__(self, source: BinaryIO, max_bytes: int) -> None:
        self._source = source
        self._max = max_bytes
        self._digest = hashlib.sha256()
        self._pending = b""
        self._eof = False
        self.count = 0
        self.observer: Callable[[bytes], None] | None = None
        """Sees the bytes in the order they are handed out (the zstd frame tracker)."""

    def _pull(self, size: int) -> bytes:
        try:
            data = self._source.read(size)
        except Exception as exc:  # noqa: BLE001 - re-raised unchanged by ingest_bundle
            raise StreamFailure(exc) from exc
        if not data:
            self._eof = True
            return b""
        self.count += len(data)
        if self.count > self._max:
            raise BundleRejected(Reason.BUNDLE_TOO_LARGE, f"the bundle is larger than {human(self._max)} ({self._max} bytes)")
        self._digest.update(data)
        return data

    def peek(self, size: int) -> bytes:
        while len(self._pending) < size and not self._eof:
            self._pending += self._pull(CHUNK)
        return self._pending[:size]

    def read(self, size: int = -1) -> bytes:
        want = CHUNK if size is None or size < 0 else size
        if self._pending:
            data, self._pending = self._pending[:want], self._pending[want:]
        else:
            data = self._pull(want)
        if data and self.observer is not None:
            self.observer(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# --------------------------------------------------------------------------- formats


def detect_format(head: bytes) -> str:
    if head.startswith(ZSTD_MAGIC) or _is_skippable_frame(head):
        return "tar.zst"
    if head.startswith(_GZIP_MAGIC):
        return "tar.gz"
    if _looks_like_tar(head):
        return "tar"
    what = "is empty" if not head else "is not a .tar, .tar.gz or .tar.zst archive"
    raise BundleRejected(Reason.NOT_AN_ARCHIVE, f"the bundle {what}")


def check_inner_tar(head: bytes, decoder: Decoder, fmt: str) -> None:
    if _looks_like_tar(head):
        return
    # A short head means the decoder already hit the end of the input: if the compressed
    # stream was cut off, say so rather than blaming the content.
    problem = decoder.problem() if len(head) < BLOCK else None
    if problem is not None:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, problem)
    raise BundleRejected(Reason.NOT_AN_ARCHIVE, f"the {fmt} bundle does not contain a tar archive")


def _is_skippable_frame(head: bytes) -> bool:
    # pzstd and some seekable-zstd writers start with a skippable frame.
    if len(head) < 4:
        return False
    low, high = ZSTD_SKIPPABLE
    return low <= int.from_bytes(head[:4], "little") <= high


def _looks_like_tar(head: bytes) -> bool:
    """A ustar/GNU/pax header, or a zero block (an archive without members)."""
    if len(head) >= 262 and head[257:262] == b"ustar":
        return True
    return len(head) >= BLOCK and head[:BLOCK].count(0) == BLOCK


class Decoder(Protocol):
    def read_chunk(self) -> bytes:
        """Up to ``CHUNK`` decompressed bytes; ``b""`` at the end of the input."""
        ...

    def problem(self) -> str | None:
        """After the end: why the compressed stream did not end cleanly, if it did not."""
        ...


def make_decoder(fmt: str, raw: RawInput, limits: IngestLimits) -> Decoder:
    if fmt == "tar.zst":
        return _ZstdDecoder(raw, limits.max_zstd_window_bytes)
    if fmt == "tar.gz":
        return _GzipDecoder(raw)
    return _PlainDecoder(raw)


class _PlainDecoder:
    def __init__(self, raw: RawInput) -> None:
        self._raw = raw

    def read_chunk(self) -> bytes:
        return self._raw.read(CHUNK)

    def problem(self) -> str | None:
        return None


class _ZstdDecoder:
    def __init__(self, raw: RawInput, max_window: int) -> None:
        self._max_window = max_window
        self._tracker = ZstdFrameTracker(on_window=self._check_window)
        raw.observer = self._tracker.feed
        # Bounded reads: ``read(CHUNK)`` never returns more than CHUNK, whatever the ratio.
        # libzstd refuses bigger windows too (max_window_size is rounded to a power of two).
        decompressor = zstandard.ZstdDecompressor(max_window_size=1 << max(10, (max_window - 1).bit_length()))
        self._reader = decompressor.stream_reader(cast(BinaryIO, raw), read_size=CHUNK, read_across_frames=True, closefd=False)

    def _check_window(self, size: int) -> None:
        if size > self._max_window:
            raise BundleRejected(
                Reason.ZSTD_WINDOW_TOO_LARGE,
                f"a zstd frame needs a {human(size)} window to decode (limit {human(self._max_window)}); "
                "compress without --long or --ultra",
            )

    def read_chunk(self) -> bytes:
        try:
            return self._reader.read(CHUNK)
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise BundleRejected(
                    Reason.ZSTD_WINDOW_TOO_LARGE, f"a zstd frame needs more than {human(self._max_window)} to decode"
                ) from None
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"the zstd stream is corrupt: {exc}") from None

    def problem(self) -> str | None:
        return self._tracker.problem()


class _GzipDecoder:
    """Multi-member gzip with bounded output (``max_length``); zero padding at the end is
    tolerated like gzip(1) does, anything else after the last member is not."""

    def __init__(self, raw: RawInput) -> None:
        self._raw = raw
        self._inflater = zlib.decompressobj(wbits=31)
        self._input = b""
        self._truncated = False
        self._done = False

    def read_chunk(self) -> bytes:
        while not self._done:
            if self._inflater.eof:
                self._next_member(self._inflater.unused_data)
                continue
            data = self._inflater.unconsumed_tail or self._take_input()
            if not data:
                self._truncated = self._done = True
                break
            try:
                out = self._inflater.decompress(data, CHUNK)
            except zlib.error as exc:
                raise BundleRejected(Reason.CORRUPT_BUNDLE, f"the gzip stream is corrupt: {exc}") from None
            if out:
                return out
        return b""

    def problem(self) -> str | None:
        return "the gzip stream is truncated (the input ends inside a member)" if self._truncated else None

    def _take_input(self) -> bytes:
        data, self._input = self._input, b""
        return data or self._raw.read(CHUNK)

    def _next_member(self, leftover: bytes) -> None:
        rest = leftover.lstrip(b"\0")
        while len(rest) < len(_GZIP_MAGIC):
            more = self._raw.read(CHUNK)
            if not more:
                break
            rest = (rest + more) if rest else more.lstrip(b"\0")
        if not rest:
            self._done = True
        elif rest.startswith(_GZIP_MAGIC):
            self._inflater = zlib.decompressobj(wbits=31)
            self._input = rest
        else:
            self._done = True
            raise BundleRejected(Reason.CORRUPT_BUNDLE, "unexpected data after the end of the gzip stream")


class TarFeed:
    """The decompressed tar stream, as a file-like object for ``tarfile`` (stream mode)."""

    def __init__(self, decoder: Decoder, raw: RawInput, limits: IngestLimits, *, compressed: bool) -> None:
        self._decoder = decoder
        self._raw = raw
        self._limits = limits
        self._compressed = compressed
        self._buffer = b""
        self._pos = 0
        self.total = 0

    def read(self, size: int | None = -1) -> bytes:
        if self._pos >= len(self._buffer) and not self._refill():
            return b""
        end = len(self._buffer) if size is None or size < 0 else min(len(self._buffer), self._pos + size)
        data = self._buffer[self._pos : end]
        self._pos = end
        return data

    def peek(self, size: int) -> bytes:
        while len(self._buffer) - self._pos < size and self._refill():
            pass
        return self._buffer[self._pos : self._pos + size]

    def drain(self) -> None:
        self._buffer, self._pos = b"", 0
        while chunk := self._decoder.read_chunk():
            self._count(len(chunk))

    def _refill(self) -> bool:
        chunk = self._decoder.read_chunk()
        if not chunk:
            return False
        self._count(len(chunk))
        self._buffer = self._buffer[self._pos :] + chunk if self._pos < len(self._buffer) else chunk
        self._pos = 0
        return True

    def _count(self, size: int) -> None:
        self.total += size
        if not self._compressed or self.total <= RATIO_GRACE_BYTES:
            return
        ratio = self.total / max(self._raw.count, 1)
        if ratio > self._limits.max_compression_ratio:
            raise BundleRejected(
                Reason.COMPRESSION_RATIO_EXCEEDED,
                f"{human(self._raw.count)} of compressed input expanded to more than {human(self.total)} "
                f"(ratio {ratio:.0f}:1, limit {self._limits.max_compression_ratio:g}:1)",
            )
