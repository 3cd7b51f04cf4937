"""Verify a static-site bundle and re-pack it into the canonical, deterministic release.

This module is the public API of bundle ingestion and the walk that ties the stages
together. The stages live in modules below it; each module imports only the ones under it:

    bundle       public API, the walk, the order in which problems are reported
    canonical    the deterministic tar.zst writer (a ``MemberSink``)
    members      strict tar headers, member paths, admission of each member
    streams      raw input, format detection, decoders, the tar feed
    zstdframes   where the zstd frames of the raw input end
    common       unit sizes, message helpers
    errors       ``Reason``, ``BundleRejected``, ``StreamFailure``

Names of the lower modules that callers use (``Reason``, ``BundleRejected``,
``normalise_member_path``, ``CANONICAL_FORMAT``, ``CHUNK``, ...) are re-exported here.

``ingest_bundle`` reads the uploaded bundle exactly once, as a stream, and never extracts
anything to disk. The bytes flow through four stages:

1. ``streams.RawInput``: every raw byte is hashed (sha256), counted and capped, including
   bytes after the end of the archive.
2. A decoder picked from the magic bytes (``streams.make_decoder``: zstd, gzip or plain),
   handing out bounded chunks.
3. ``streams.TarFeed``: the decompressed stream as seen by ``tarfile`` in stream mode
   (``r|``), enforcing the compression-ratio cap.
4. ``members.Admission`` checks every member (type, path, duplicates, sizes) the moment its
   header is parsed, before its data is read; accepted members go to
   ``canonical.CanonicalWriter``.

``walk_bundle`` runs the same four stages with any ``MemberSink`` in place of the canonical
writer and no expected checksum (the caller verifies its own). The release fetcher
(``serve.fetch``) unpacks through it, so a release is admitted member by member by exactly
the rules that admitted the bundle it was made from.

Design decisions (those of a single stage are in its module):

* **Never echo what the bytes are.** A checksum mismatch names the expected digest only, and
  no message quotes raw bytes: a tenant must not learn the digest or content of an object it
  could name but not read (issue "sources confined per tenant").
* **Fail fast, but let the checksum speak last for "valid" bundles.** A member check fails
  the moment it can; the checksum is only known at the end, so a bundle that is otherwise
  fine but whose bytes differ from the expected hash is ``ChecksumMismatch``. That is also
  preferred over problems found while draining the input after the tar end (trailing
  garbage, an unfinished compressed stream): wrong bytes are the root cause there.
  (Decoders read ahead, so garbage right behind a small zstd frame can surface during the
  walk already, as ``CorruptBundle``.) ``EmptyBundle`` and ``MissingEntrypoint`` come
  after the checksum too.
* **The caller's streams are not the bundle.** An exception raised by ``source`` or ``out``
  (a store timeout, a full disk) reaches the caller unchanged, never as a rejection: the
  stages wrap it in ``StreamFailure`` and the public functions unwrap it.
* **tarfile is lenient; we are not** (see ``members``): a real end-of-archive block is
  required, and errors that tarfile lets escape are ``CorruptBundle`` too.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol, cast

from .canonical import CANONICAL_FORMAT, CANONICAL_ZSTD_LEVEL, CanonicalWriter
from .common import BLOCK, CHUNK, RECORD, human
from .errors import BundleRejected, Reason, StreamFailure
from .limits import IngestLimits
from .members import (
    MAX_EXTENDED_HEADER_BYTES,
    MAX_EXTENSION_CHAIN,
    Admission,
    EndMarker,
    check_depth,
    normalise_member_path,
    strict_tarinfo,
)
from .streams import Decoder, RawInput, TarFeed, check_inner_tar, detect_format, make_decoder

__all__ = [
    "BLOCK",
    "CANONICAL_FORMAT",
    "CANONICAL_ZSTD_LEVEL",
    "CHUNK",
    "FORMATS",
    "MAX_EXTENDED_HEADER_BYTES",
    "MAX_EXTENSION_CHAIN",
    "RECORD",
    "BundleRejected",
    "IngestResult",
    "Manifest",
    "MemberSink",
    "Reason",
    "WalkResult",
    "ingest_bundle",
    "normalise_member_path",
    "walk_bundle",
]

FORMATS = frozenset({"tar.zst", "tar.gz", "tar"})
_PROGRESS_EVERY = 1000


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

    def add_dir(self, path: str, mtime: float) -> None: ...

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
    except StreamFailure as failure:
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
    except StreamFailure as failure:
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
    writer = CanonicalWriter(out)
    walked = _walk_stream(source, writer, limits, FORMATS, log)
    return _conclude(
        walked.raw, expected, walked.late_problem, walked.admission, wanted, writer, walked.fmt, walked.feed.total, log
    )


@dataclass
class _Walked:
    raw: RawInput
    fmt: str
    feed: TarFeed
    admission: Admission
    late_problem: str | None


def _walk_stream(
    source: BinaryIO, sink: MemberSink, limits: IngestLimits, formats: frozenset[str], log: Callable[[str], None]
) -> _Walked:
    raw = RawInput(source, limits.max_bundle_bytes)
    fmt = detect_format(raw.peek(BLOCK))
    if fmt not in formats:
        wanted = " or ".join(f".{name}" for name in sorted(formats))
        raise BundleRejected(Reason.NOT_AN_ARCHIVE, f"the bundle is a .{fmt} archive, expected {wanted}")
    log(f"bundle format: {fmt}")
    decoder = make_decoder(fmt, raw, limits)
    feed = TarFeed(decoder, raw, limits, compressed=fmt != "tar")
    if fmt != "tar":
        check_inner_tar(feed.peek(BLOCK), decoder, fmt)
    admission = Admission(limits)
    _walk(feed, sink, admission, limits, log)
    late_problem = _finish_input(feed, decoder, raw)
    return _Walked(raw, fmt, feed, admission, late_problem)


def _conclude(
    raw: RawInput,
    expected: str,
    late_problem: str | None,
    admission: Admission,
    wanted: str,
    writer: CanonicalWriter,
    fmt: str,
    decompressed: int,
    log: Callable[[str], None],
) -> IngestResult:
    actual = raw.hexdigest()
    unpacked = f", {human(decompressed)} decompressed" if fmt != "tar" else ""
    log(f"read {human(raw.count)} ({raw.count} bytes{unpacked})")
    if actual != expected:
        # Never the actual digest: with it, anyone who can name an object could have it served.
        raise BundleRejected(Reason.CHECKSUM_MISMATCH, f"the bundle's sha256 is not {expected} (spec.artifact.sha256)")
    if late_problem is not None:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, late_problem)
    admission.check_complete(wanted)
    manifest = Manifest(files=admission.files, total_bytes=admission.total_bytes, entrypoint=wanted)
    canonical_sha256, canonical_bytes = writer.finish()
    log(f"checksum verified (sha256 {expected}); entrypoint {manifest.entrypoint} present")
    log(f"canonical release: {CANONICAL_FORMAT}, {canonical_bytes} bytes, sha256 {canonical_sha256}")
    return IngestResult(
        manifest=manifest,
        source_sha256=actual,
        source_bytes=raw.count,
        canonical_sha256=canonical_sha256,
        canonical_bytes=canonical_bytes,
        format=fmt,
    )


def _walk(feed: TarFeed, writer: MemberSink, admission: Admission, limits: IngestLimits, log: Callable[[str], None]) -> None:
    end = EndMarker()
    try:
        with tarfile.open(
            fileobj=cast(BinaryIO, feed),
            mode="r|",
            tarinfo=strict_tarinfo(limits, end),
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
        # here: RawInput and the canonical writer's sink wrap them in StreamFailure.
        raise BundleRejected(Reason.CORRUPT_BUNDLE, f"unreadable tar stream: {exc}") from None
    if not end.seen:
        raise BundleRejected(Reason.CORRUPT_BUNDLE, "the tar stream stops at an unreadable header")
    log(
        f"checked {admission.members} members: {admission.files} files ({human(admission.total_bytes)}), "
        f"{admission.dirs} directories"
    )


def _copy_member(archive: tarfile.TarFile, member: tarfile.TarInfo, admission: Admission, writer: MemberSink) -> None:
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


def _finish_input(feed: TarFeed, decoder: Decoder, raw: RawInput) -> str | None:
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
    check_depth(path, limits.max_path_depth)
    return path
