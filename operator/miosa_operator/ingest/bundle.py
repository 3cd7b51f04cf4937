"""Verify a static-site bundle and re-pack it into the canonical, deterministic release.

``ingest_bundle`` reads the uploaded bundle exactly once, as a stream, and never extracts
anything to disk. The bytes flow through four stages:

1. ``_RawInput``: every raw byte is hashed (sha256), counted and capped, including bytes
   after the end of the archive (the input is always drained, so the checksum really covers
   the whole upload).
2. A decoder picked from the magic bytes (zstd ``28 B5 2F FD``, gzip ``1F 8B``, tar =
   ``ustar`` at offset 257): ``_ZstdDecoder``, ``_GzipDecoder`` or ``_PlainDecoder``. All hand
   out bounded chunks, so a decompression bomb never sits in memory.
3. ``_TarFeed``: the decompressed stream as seen by ``tarfile`` in stream mode (``r|``),
   enforcing the compression-ratio cap as the stream progresses.
4. ``_Admission`` checks every member (type, path, duplicates, sizes) the moment its header
   is parsed, before its data is read; accepted members go to ``_CanonicalWriter``.

``walk_bundle`` runs the same four stages with any ``MemberSink`` in place of the canonical
writer and no expected checksum (the caller verifies its own). The release fetcher
(``serve.fetch``) unpacks through it, so a release is admitted member by member by exactly
the rules that admitted the bundle it was made from.

Design decisions:

* **Fail fast, but let the checksum speak last for "valid" bundles.** A member check fails
  the moment it can; the checksum is only known at the end, so a bundle that is otherwise
  fine but whose bytes differ from the expected hash is ``ChecksumMismatch``. That is also
  preferred over problems found while draining the input after the tar end (trailing
  garbage, an unfinished compressed stream): wrong bytes are the root cause there.
  (Decoders read ahead, so garbage right behind a small zstd frame can surface during the
  walk already, as ``CorruptBundle``.) ``EmptyBundle`` and ``MissingEntrypoint`` come
  after the checksum too.
* **The caller's streams are not the bundle.** An exception raised by ``source`` or ``out``
  (a store timeout, a full disk) reaches the caller unchanged, never as a rejection.
* **tarfile is lenient; we are not.** Stream-mode ``tarfile`` treats an unreadable header in
  the middle of an archive as a normal end. A ``TarInfo`` subclass (``tarinfo=``, the
  documented extension point) turns header errors into ``CorruptBundle``, records that a
  real end-of-archive block was seen, and caps extended headers (pax, GNU long names) that
  tarfile would otherwise read into memory whatever their size.
* **libzstd's streaming reader reports a cut-off frame as a clean end of data**, so
  ``_ZstdFrameTracker`` follows frame and block headers over the raw bytes (no decoding)
  to know whether the input ended exactly at the end of a frame.
* **Deterministic output.** Members are re-packed in their original order with their
  mtime (whole seconds), uid/gid 0, empty owner names, modes 0644/0755, in PAX format via
  ``TarInfo.tobuf``, then zstd at a fixed level, single-threaded, with a frame checksum.
  The same input bytes therefore give byte-identical releases (for the same libzstd).
* Member names are normalised (leading ``./``, ``.`` components and repeated ``/`` go);
  two members with the same normalised name, or a file used as a directory, are
  ``DuplicateMember``: whoever unpacks or serves the release would otherwise have to pick
  one silently. Names must be valid UTF-8 without control characters.
"""

from __future__ import annotations

import hashlib
import math
import re
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, BinaryIO, Protocol, Self, cast

import zstandard

from .limits import RATIO_GRACE_BYTES, IngestLimits

CHUNK = 1 << 20
CANONICAL_FORMAT = "tar.zst"
CANONICAL_ZSTD_LEVEL = 3
"""zstd's default: fast, and static sites are mostly text that compresses well at any level.
Changing it changes every canonical hash produced from then on."""

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
MAX_EXTENDED_HEADER_BYTES = 64 << 10
MAX_EXTENSION_CHAIN = 16
_MAX_MTIME = 8**11 - 1  # largest value of the ustar octal field: no pax header needed
_PROGRESS_EVERY = 1000

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_SKIPPABLE = (0x184D2A50, 0x184D2A5F)
_GZIP_MAGIC = b"\x1f\x8b"
FORMATS = frozenset({"tar.zst", "tar.gz", "tar"})


class Reason(StrEnum):
    """Kubernetes condition reasons for a rejected bundle."""

    CHECKSUM_MISMATCH = "ChecksumMismatch"
    NOT_AN_ARCHIVE = "NotAnArchive"
    CORRUPT_BUNDLE = "CorruptBundle"
    EMPTY_BUNDLE = "EmptyBundle"
    MISSING_ENTRYPOINT = "MissingEntrypoint"
    UNSAFE_MEMBER_TYPE = "UnsafeMemberType"
    UNSAFE_PATH = "UnsafePath"
    DUPLICATE_MEMBER = "DuplicateMember"
    TOO_MANY_MEMBERS = "TooManyMembers"
    FILE_TOO_LARGE = "FileTooLarge"
    BUNDLE_TOO_LARGE = "BundleTooLarge"
    COMPRESSION_RATIO_EXCEEDED = "CompressionRatioExceeded"


class BundleRejected(Exception):
    """The bundle can never become a release; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = str(reason)
        self.message = message


@dataclass(frozen=True)
class Manifest:
    files: int
    """Regular files only."""
    total_bytes: int
    """Sum of the regular files' sizes."""
    entrypoint: str


@dataclass(frozen=True)
class IngestResult:
    manifest: Manifest
    source_sha256: str
    source_bytes: int
    canonical_sha256: str
    canonical_bytes: int
    format: str
    """Format of the source bundle: ``tar.zst``, ``tar.gz`` or ``tar``."""


class MemberSink(Protocol):
    """Receives admitted members in archive order (the canonical writer, or an unpacker).

    A sink must not raise ``ValueError``, ``IndexError``, ``OverflowError`` or
    ``tarfile.TarError``: the walk reads those as a broken bundle. Anything else it raises
    (``OSError`` for a full disk, say) reaches the caller unchanged.
    """

    def add_dir(self, path: str, mtime: float) -> None:
        ...

    def add_file(self, path: str, mtime: float, size: int, data: IO[bytes]) -> None:
        """Consume exactly ``size`` bytes of ``data``."""
        ...


@dataclass(frozen=True)
class WalkResult:
    format: str
    files: int
    dirs: int
    total_bytes: int
    """Sum of the regular files' sizes."""
    problem_after_end: str | None
    """A structural problem found after the end of the tar stream (trailing garbage, a cut-off
    compressed stream). Ingestion reports it only once the checksum matched; do the same."""


def _ignore(_: str) -> None:
    pass


def ingest_bundle(
    source: BinaryIO,
    out: BinaryIO,
    *,
    expected_sha256: str,
    entrypoint: str = "index.html",
    limits: IngestLimits = IngestLimits(),
    log: Callable[[str], None] = _ignore,
) -> IngestResult:
    """Verify ``source`` and write the canonical ``tar.zst`` release to ``out``.

    ``out`` receives bytes as they are produced; on ``BundleRejected`` its content is
    meaningless and the caller discards it. Errors raised by ``source`` or ``out``
    themselves (e.g. a store's ``TransientStoreError``) propagate unchanged.
    """
    expected = _expected_digest(expected_sha256)
    wanted = _entrypoint_path(entrypoint, limits)
    try:
        return _ingest(source, out, expected, wanted, limits, log)
    except _StreamFailure as failure:
        raise failure.original from None


def walk_bundle(
    source: BinaryIO,
    sink: MemberSink,
    *,
    limits: IngestLimits = IngestLimits(),
    formats: frozenset[str] = FORMATS,
    log: Callable[[str], None] = _ignore,
) -> WalkResult:
    """Stream ``source`` once, check every member as ingestion does, hand admitted ones to ``sink``.

    Raises ``BundleRejected`` the moment a check fails (a format outside ``formats`` is
    ``NotAnArchive``). The input is drained to its end on success. Errors raised by
    ``source`` or ``sink`` themselves propagate unchanged.
    """
    try:
        walked = _walk_stream(source, sink, limits, formats, log)
    except _StreamFailure as failure:
        raise failure.original from None
    admission = walked.admission
    return WalkResult(
        format=walked.fmt,
        files=admission.files,
        dirs=admission.dirs,
        total_bytes=admission.total_bytes,
        problem_after_end=walked.late_problem,
    )


def _ingest(
    source: BinaryIO, out: BinaryIO, expected: str, wanted: str, limits: IngestLimits, log: Callable[[str], None]
) -> IngestResult:
    # The compressor writes nothing until the first member, so creating it before the format
    # checks leaves ``out`` untouched for bundles refused up front.
    writer = _CanonicalWriter(out)
    walked = _walk_stream(source, writer, limits, FORMATS, log)
    return _conclude(
        walked.raw, expected, walked.late_problem, walked.admission, wanted, writer, walked.fmt, walked.feed.total, log
    )


@dataclass
class _Walked:
    raw: _RawInput
    fmt: str
    feed: _TarFeed
    admission: _Admission
    late_problem: str | None


def _walk_stream(
    source: BinaryIO, sink: MemberSink, limits: IngestLimits, formats: frozenset[str], log: Callable[[str], None]
) -> _Walked:
    raw = _RawInput(source, limits.max_bundle_bytes)
    fmt = _detect_format(raw.peek(BLOCK))
    if fmt not in formats:
        wanted = " or ".join(f".{name}" for name in sorted(formats))
        raise BundleRejected(Reason.NOT_AN_ARCHIVE, f"the bundle is a .{fmt} archive, expected {wanted}")
    log(f"bundle format: {fmt}")
    decoder = _make_decoder(fmt, raw)
    feed = _TarFeed(decoder, raw, limits, compressed=fmt != "tar")
    if fmt != "tar":
        _check_inner_tar(feed.peek(BLOCK), decoder, fmt)
    admission = _Admission(limits)
    _walk(feed, sink, admission, limits, log)
    late_problem = _finish_input(feed, decoder, raw)
    return _Walked(raw, fmt, feed, admission, late_problem)


def _conclude(
    raw: _RawInput,
    expected: str,
    late_problem: str | None,
    admission: _Admission,
    wanted: str,
    writer: _CanonicalWriter,
    fmt: str,
    decompressed: int,
    log: Callable[[str], None],
) -> IngestResult:
    actual = raw.hexdigest()
    unpacked = f", {_human(decompressed)} decompressed" if fmt != "tar" else ""
    log(f"read {_human(raw.count)} ({raw.count} bytes{unpacked}), sha256 {actual}")
    if actual != expected:
        raise BundleRejected(Reason.CHECKSUM_MISMATCH, f"bundle sha256 is {actual}, expected {expected}")
    if late_problem is not None:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, late_problem)
    manifest = admission.manifest(wanted)
    canonical_sha256, canonical_bytes = writer.finish()
    log(f"checksum verified; entrypoint {manifest.entrypoint} present")
    log(f"canonical release: {CANONICAL_FORMAT}, {canonical_bytes} bytes, sha256 {canonical_sha256}")
    return IngestResult(
        manifest=manifest,
        source_sha256=actual,
        source_bytes=raw.count,
        canonical_sha256=canonical_sha256,
        canonical_bytes=canonical_bytes,
        format=fmt,
    )


def _walk(
    feed: _TarFeed, writer: MemberSink, admission: _Admission, limits: IngestLimits, log: Callable[[str], None]
) -> None:
    end = _EndMarker()
    try:
        with tarfile.open(
            fileobj=cast(BinaryIO, feed),
            mode="r|",
            tarinfo=_strict_tarinfo(limits, end),
            encoding="utf-8",
            errors="surrogateescape",
        ) as archive:
            for member in archive:
                _copy_member(archive, member, admission, writer)
                if admission.members % _PROGRESS_EVERY == 0:
                    log(f"checked {admission.members} members")
    except tarfile.ReadError as exc:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, _tar_error(exc)) from None
    except tarfile.TarError as exc:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, f"broken tar stream: {exc}") from None
    except (ValueError, IndexError, OverflowError, RecursionError) as exc:
        # tarfile parses some hostile extended headers (e.g. a garbled GNU.sparse.map) with a
        # bare int() and lets the error escape. Failures of the caller's streams cannot land
        # here: _RawInput and _HashingSink wrap them in _StreamFailure.
        raise BundleRejected(Reason.CORRUPT_BUNDLE, f"unreadable tar stream: {exc}") from None
    if not end.seen:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, "the tar stream stops at an unreadable header")
    log(
        f"checked {admission.members} members: {admission.files} files ({_human(admission.total_bytes)}), "
        f"{admission.dirs} directories"
    )


def _copy_member(
    archive: tarfile.TarFile, member: tarfile.TarInfo, admission: _Admission, writer: MemberSink
) -> None:
    path = admission.admit(member)
    if path is None:
        return  # the archive root ("." or "./"), implicit in every archive
    if member.isdir():
        writer.add_dir(path, member.mtime)
        return
    data = archive.extractfile(member)
    assert data is not None, "admitted members are regular files or directories"
    writer.add_file(path, member.mtime, member.size, data)


def _tar_error(exc: tarfile.TarError) -> str:
    if "unexpected end of data" in str(exc):
        return "the tar stream ends in the middle of a member (truncated?)"
    return f"broken tar stream: {exc}"


def _finish_input(feed: _TarFeed, decoder: _Decoder, raw: _RawInput) -> str | None:
    """Consume everything after the tar end; return a structural problem found there, if any."""
    problem: str | None = None
    try:
        feed.drain()
    except BundleRejected as rejected:
        if rejected.reason != Reason.CORRUPT_BUNDLE:
            raise
        problem = rejected.message  # reported only if the checksum matches
    raw.drain()
    return problem or decoder.problem()


# --------------------------------------------------------------------------- arguments


def _expected_digest(value: str) -> str:
    digest = value.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise BundleRejected(Reason.CHECKSUM_MISMATCH, f"expected sha256 {value!r} is not 64 hex digits")
    return digest


def _entrypoint_path(entrypoint: str, limits: IngestLimits) -> str:
    path = normalise_member_path(entrypoint, limits.max_path_bytes, is_file=True)
    if path is None:
        raise BundleRejected(Reason.UNSAFE_PATH, f"entrypoint {entrypoint!r} does not name a file")
    return path


# --------------------------------------------------------------------------- raw input


class _StreamFailure(Exception):
    """Carries an exception of the caller's ``source`` or ``out`` stream through tarfile and
    zstd, so that it is neither mistaken for a broken bundle nor altered
    (``ingest_bundle`` re-raises the original)."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


class _RawInput:
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
            raise _StreamFailure(exc) from exc
        if not data:
            self._eof = True
            return b""
        self.count += len(data)
        if self.count > self._max:
            raise BundleRejected(
                Reason.BUNDLE_TOO_LARGE, f"the bundle is larger than {_human(self._max)} ({self._max} bytes)"
            )
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


def _detect_format(head: bytes) -> str:
    if head.startswith(_ZSTD_MAGIC) or _is_skippable_frame(head):
        return "tar.zst"
    if head.startswith(_GZIP_MAGIC):
        return "tar.gz"
    if _looks_like_tar(head):
        return "tar"
    shown = head[:8].hex(" ") if head else "nothing"
    raise BundleRejected(
        Reason.NOT_AN_ARCHIVE, f"the bundle is not a .tar, .tar.gz or .tar.zst archive (it starts with {shown})"
    )


def _check_inner_tar(head: bytes, decoder: _Decoder, fmt: str) -> None:
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
    low, high = _ZSTD_SKIPPABLE
    return low <= int.from_bytes(head[:4], "little") <= high


def _looks_like_tar(head: bytes) -> bool:
    """A ustar/GNU/pax header, or a zero block (an archive without members)."""
    if len(head) >= 262 and head[257:262] == b"ustar":
        return True
    return len(head) >= BLOCK and head[:BLOCK].count(0) == BLOCK


class _Decoder(Protocol):
    def read_chunk(self) -> bytes:
        """Up to ``CHUNK`` decompressed bytes; ``b""`` at the end of the input."""
        ...

    def problem(self) -> str | None:
        """After the end: why the compressed stream did not end cleanly, if it did not."""
        ...


def _make_decoder(fmt: str, raw: _RawInput) -> _Decoder:
    if fmt == "tar.zst":
        return _ZstdDecoder(raw)
    if fmt == "tar.gz":
        return _GzipDecoder(raw)
    return _PlainDecoder(raw)


class _PlainDecoder:
    def __init__(self, raw: _RawInput) -> None:
        self._raw = raw

    def read_chunk(self) -> bytes:
        return self._raw.read(CHUNK)

    def problem(self) -> str | None:
        return None


class _ZstdDecoder:
    def __init__(self, raw: _RawInput) -> None:
        self._tracker = _ZstdFrameTracker()
        raw.observer = self._tracker.feed
        # Bounded reads: ``read(CHUNK)`` never returns more than CHUNK, whatever the ratio.
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, raw), read_size=CHUNK, read_across_frames=True, closefd=False
        )

    def read_chunk(self) -> bytes:
        try:
            return self._reader.read(CHUNK)
        except zstandard.ZstdError as exc:
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"the zstd stream is corrupt: {exc}") from None

    def problem(self) -> str | None:
        return self._tracker.problem()


class _ZstdFrameTracker:
    """Follows zstd frame and block headers over the raw bytes, without decoding.

    Only sizes are read (RFC 8878: frame header, 3-byte block headers, optional 4-byte
    checksum; skippable frames), which is enough to tell whether the input ends on a frame
    boundary. Content errors are the decoder's business.
    """

    def __init__(self) -> None:
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
        if value == _ZSTD_MAGIC:
            self._in_frame = True
            self._expect(1, self._descriptor)
        elif _ZSTD_SKIPPABLE[0] <= magic <= _ZSTD_SKIPPABLE[1]:
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
        if rest:
            self._expect(rest, lambda _: self._expect(3, self._block))
        else:
            self._expect(3, self._block)

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


class _GzipDecoder:
    """Multi-member gzip with bounded output (``max_length``); zero padding at the end is
    tolerated like gzip(1) does, anything else after the last member is not."""

    def __init__(self, raw: _RawInput) -> None:
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


class _TarFeed:
    """The decompressed tar stream, as a file-like object for ``tarfile`` (stream mode)."""

    def __init__(self, decoder: _Decoder, raw: _RawInput, limits: IngestLimits, *, compressed: bool) -> None:
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
                f"{_human(self._raw.count)} of compressed input expanded to more than {_human(self.total)} "
                f"(ratio {ratio:.0f}:1, limit {self._limits.max_compression_ratio:g}:1)",
            )


# --------------------------------------------------------------------------- tar headers

_EXTENSION_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)
_LONG_NAME_TYPES = frozenset({tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})
_FILE_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE})
_TYPE_NAMES = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "sparse file",
}


@dataclass
class _EndMarker:
    seen: bool = False


def _strict_tarinfo(limits: IngestLimits, end: _EndMarker) -> type[tarfile.TarInfo]:
    """A ``TarInfo`` class whose header parsing is strict and bounded (one per ingestion)."""
    chain = 0  # consecutive extended headers: tarfile follows them recursively

    class StrictTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            nonlocal chain
            if len(buf) != BLOCK:
                raise BundleRejected(
                    Reason.CORRUPT_BUNDLE, "the tar stream ends without an end-of-archive marker (truncated?)"
                )
            if buf.count(0) == BLOCK:
                end.seen = True
                return super().frombuf(buf, encoding, errors)  # raises tarfile's own end signal
            try:
                info = super().frombuf(buf, encoding, errors)
            except tarfile.HeaderError as exc:
                raise BundleRejected(Reason.CORRUPT_BUNDLE, f"invalid tar header: {exc}") from None
            chain = chain + 1 if info.type in _EXTENSION_TYPES else 0
            _check_header(info, chain, limits)
            return info

    return StrictTarInfo


def _check_header(info: tarfile.TarInfo, chain: int, limits: IngestLimits) -> None:
    """Checks that must happen before tarfile reads whatever the header announces."""
    if chain > MAX_EXTENSION_CHAIN:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, f"more than {MAX_EXTENSION_CHAIN} extended headers in a row")
    if info.type in _LONG_NAME_TYPES and info.size > limits.max_path_bytes + 1:
        raise BundleRejected(Reason.UNSAFE_PATH, f"a member name is longer than {limits.max_path_bytes} bytes")
    if info.type in _EXTENSION_TYPES and info.size > MAX_EXTENDED_HEADER_BYTES:
        raise BundleRejected(
            Reason.CORRUPT_BUNDLE, f"an extended header of {info.size} bytes (limit {MAX_EXTENDED_HEADER_BYTES})"
        )
    if info.type == tarfile.GNUTYPE_SPARSE:  # refuse before tarfile walks its sparse map
        raise _unsafe_type(info.name, "sparse file")


# --------------------------------------------------------------------------- members


def normalise_member_path(name: str, max_bytes: int, *, is_file: bool) -> str | None:
    """The canonical relative path of a member, ``None`` for the archive root (``.``).

    Raises ``BundleRejected(UnsafePath)`` for anything a server or an unpacker could
    misread: absolute paths, ``..``, backslashes, NUL and control characters, invalid
    UTF-8, empty or over-long names.
    """
    if not name:
        raise BundleRejected(Reason.UNSAFE_PATH, "a member has an empty name")
    if "\x00" in name:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} contains a NUL byte")
    if "\\" in name:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} contains a backslash")
    if _CONTROL_CHARS.search(name):
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} contains control characters")
    if name.startswith("/"):
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} is an absolute path")
    if is_file and name.endswith("/"):
        raise BundleRejected(Reason.UNSAFE_PATH, f"regular file {_show(name)} has a directory name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} contains a '..' component")
    if not parts:
        return None
    path = "/".join(parts)
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} is not valid UTF-8") from None
    if len(encoded) > max_bytes:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{_show(name)} is longer than {max_bytes} bytes")
    return path


@dataclass
class _Admission:
    """Checks members one by one and keeps the tallies that become the manifest."""

    limits: IngestLimits
    members: int = 0
    files: int = 0
    dirs: int = 0
    total_bytes: int = 0
    _files: set[str] = field(default_factory=set)
    _dirs: set[str] = field(default_factory=set)
    _parents: set[str] = field(default_factory=set)

    def admit(self, member: tarfile.TarInfo) -> str | None:
        """The member's normalised path (None for the root entry), or BundleRejected."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise BundleRejected(Reason.TOO_MANY_MEMBERS, f"more than {self.limits.max_members} members")
        is_file = _is_regular_file(member)
        path = normalise_member_path(member.name, self.limits.max_path_bytes, is_file=is_file)
        if path is None:
            if is_file:
                raise BundleRejected(Reason.UNSAFE_PATH, f"regular file {_show(member.name)} has no name")
            return None
        self._claim(path, is_file)
        if is_file:
            self._count_file(path, member.size)
        elif member.size:
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"directory {_show(path)} declares {member.size} bytes of data")
        else:
            self.dirs += 1
        return path

    def _claim(self, path: str, is_file: bool) -> None:
        parents = _parents_of(path)
        for parent in parents:
            if parent in self._files:
                raise BundleRejected(
                    Reason.DUPLICATE_MEMBER, f"{_show(path)} is inside {_show(parent)}, which is a file"
                )
        if path in self._files or path in self._dirs:
            raise BundleRejected(Reason.DUPLICATE_MEMBER, f"{_show(path)} appears more than once")
        if is_file and path in self._parents:
            raise BundleRejected(Reason.DUPLICATE_MEMBER, f"{_show(path)} is both a file and a directory")
        (self._files if is_file else self._dirs).add(path)
        self._parents.update(parents)

    def _count_file(self, path: str, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise BundleRejected(
                Reason.FILE_TOO_LARGE, f"{_show(path)} is {size} bytes (limit {self.limits.max_file_bytes})"
            )
        self.files += 1
        self.total_bytes += size
        if self.total_bytes > self.limits.max_total_bytes:
            raise BundleRejected(
                Reason.BUNDLE_TOO_LARGE,
                f"the files add up to more than {_human(self.limits.max_total_bytes)} "
                f"({self.limits.max_total_bytes} bytes) uncompressed",
            )

    def manifest(self, entrypoint: str) -> Manifest:
        if not self.files:
            raise BundleRejected(Reason.EMPTY_BUNDLE, "the bundle contains no regular file")
        if entrypoint not in self._files:
            where = "is a directory" if entrypoint in self._dirs or entrypoint in self._parents else "is missing"
            raise BundleRejected(Reason.MISSING_ENTRYPOINT, f"entrypoint {_show(entrypoint)} {where}")
        return Manifest(files=self.files, total_bytes=self.total_bytes, entrypoint=entrypoint)


def _is_regular_file(member: tarfile.TarInfo) -> bool:
    # tarfile's isreg() also says yes to contiguous and sparse files: decide ourselves.
    if member.type in _FILE_TYPES and member.sparse is None:
        return True
    if member.type == tarfile.DIRTYPE:
        return False
    kind = "sparse file" if member.sparse is not None else _TYPE_NAMES.get(member.type)
    raise _unsafe_type(member.name, kind or f"member of type {member.type.decode('ascii', 'backslashreplace')!r}")


def _unsafe_type(name: str, kind: str) -> BundleRejected:
    return BundleRejected(
        Reason.UNSAFE_MEMBER_TYPE, f"{_show(name)} is a {kind}; only regular files and directories are allowed"
    )


def _parents_of(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


# --------------------------------------------------------------------------- output


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
            raise _StreamFailure(exc) from exc
        return len(data)

    def flush(self) -> None:
        try:
            self._out.flush()
        except Exception as exc:  # noqa: BLE001
            raise _StreamFailure(exc) from exc

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _CanonicalWriter:
    """Writes the canonical tar (PAX headers from ``TarInfo.tobuf``) through zstd."""

    def __init__(self, out: BinaryIO) -> None:
        self._sink = _HashingSink(out)
        compressor = zstandard.ZstdCompressor(level=CANONICAL_ZSTD_LEVEL, write_checksum=True, threads=0)
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
                raise BundleRejected(Reason.CORRUPT_BUNDLE, f"the data of {_show(path)} ends early (truncated?)")
            self._write(chunk)
            remaining -= len(chunk)
        self._pad_to(BLOCK)

    def finish(self) -> tuple[str, int]:
        """End the archive (two zero blocks, padded to a full record) and the zstd frame."""
        self._write(bytes(2 * BLOCK))
        self._pad_to(RECORD)
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._stream.close()  # type: ignore[no-untyped-call]  # (unannotated in zstandard's stubs)
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


# --------------------------------------------------------------------------- text


def _show(name: str) -> str:
    """A member name safe to put in a message: quoted, escaped, at most 200 characters."""
    return repr(name if len(name) <= 200 else name[:200] + "...")


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
