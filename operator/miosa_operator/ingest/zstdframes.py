"""Where the zstd frames of the raw input start and end, without decoding them.

Design decision: **libzstd's streaming reader reports a cut-off frame as a clean end of
data**, so ``ZstdFrameTracker`` follows frame and block headers over the raw bytes (no
decoding) to know whether the input ended exactly at the end of a frame. It is fed by
``streams.RawInput`` (as its ``observer``) and queried by the zstd decoder once the input is
exhausted. It depends on nothing else in the package.

It also reads each frame's window size (the Window_Descriptor, or the content size of a
single-segment frame) and hands it to ``on_window`` *before* the decoder sees the frame: the
decoder must allocate that window, so a frame asking for 128 MiB is refused up front
(``streams``: ``ZstdWindowTooLarge``) rather than left to libzstd's generic error.
"""

from __future__ import annotations

from collections.abc import Callable

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SKIPPABLE = (0x184D2A50, 0x184D2A5F)
"""Range of the magic numbers of skippable frames (RFC 8878)."""


class ZstdFrameTracker:
    """Follows zstd frame and block headers over the raw bytes, without decoding.

    Only sizes are read (RFC 8878: frame header, 3-byte block headers, optional 4-byte
    checksum; skippable frames), which is enough to tell whether the input ends on a frame
    boundary. Content errors are the decoder's business.
    """

    def __init__(self, on_window: Callable[[int], None] | None = None) -> None:
        self._on_window = on_window
        self._need = 4
        self._field = bytearray()
        self._on_field: Callable[[bytes], None] = self._magic
        self._skip = 0
        self._after_skip: Callable[[], None] = self._frame_done
        self._in_frame = False
        self._checksum = False
        self._frames = 0
        self._broken: str | None = None

    def feed(self, data: bytes) -> None:
        view, pos, size = memoryview(data), 0, len(data)
        while pos < size and self._broken is None:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                if not self._skip:
                    self._after_skip()
                continue
            take = min(self._need - len(self._field), size - pos)
            self._field += view[pos : pos + take]
            pos += take
            if len(self._field) == self._need:
                value = bytes(self._field)
                self._field.clear()
                self._on_field(value)

    def problem(self) -> str | None:
        if self._broken is not None:
            return self._broken
        if self._in_frame or self._field or self._skip:
            return "the zstd stream is truncated (the input ends inside a frame)"
        if not self._frames:
            return "the zstd stream has no frame"
        return None

    def _expect(self, need: int, handler: Callable[[bytes], None]) -> None:
        self._need, self._on_field = need, handler

    def _skip_then(self, count: int, then: Callable[[], None]) -> None:
        if count:
            self._skip, self._after_skip = count, then
        else:
            then()

    def _magic(self, value: bytes) -> None:
        magic = int.from_bytes(value, "little")
        if value == ZSTD_MAGIC:
            self._in_frame = True
            self._expect(1, self._descriptor)
        elif ZSTD_SKIPPABLE[0] <= magic <= ZSTD_SKIPPABLE[1]:
            self._in_frame = True
            self._expect(4, lambda size: self._skip_then(int.from_bytes(size, "little"), self._frame_done))
        else:
            self._broken = "unexpected data after the last zstd frame"

    def _descriptor(self, value: bytes) -> None:
        descriptor = value[0]
        if descriptor & 0x08:
            self._broken = "invalid zstd frame header (reserved bit set)"
            return
        single_segment = bool(descriptor & 0x20)
        self._checksum = bool(descriptor & 0x04)
        content_size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
        rest = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03] + content_size_bytes

        def header(fields: bytes) -> None:
            if self._on_window is not None:
                self._on_window(_window_size(fields, single_segment, content_size_bytes))
            self._expect(3, self._block)

        # rest >= 1: a single-segment frame always carries its content size.
        self._expect(rest, header)

    def _block(self, value: bytes) -> None:
        header = int.from_bytes(value, "little")
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            self._broken = "invalid zstd block (reserved block type)"
            return
        then = self._frame_end if last else (lambda: self._expect(3, self._block))
        self._skip_then(1 if kind == 1 else size, then)  # an RLE block stores one byte

    def _frame_end(self) -> None:
        self._skip_then(4 if self._checksum else 0, self._frame_done)

    def _frame_done(self) -> None:
        self._frames += 1
        self._in_frame = False
        self._expect(4, self._magic)


def _window_size(fields: bytes, single_segment: bool, content_size_bytes: int) -> int:
    """RFC 8878 3.1.1.1.2: the window a decoder needs for this frame."""
    if single_segment:  # the window is the whole content
        size = int.from_bytes(fields[len(fields) - content_size_bytes :], "little")
        return size + 256 if content_size_bytes == 2 else size
    exponent, mantissa = fields[0] >> 3, fields[0] & 0x07
    base = 1 << (10 + exponent)
    return base + (base // 8) * mantissa
