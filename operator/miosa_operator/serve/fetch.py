"""Fetch a canonical release, verify it and unpack it: the init container of static pods.

``fetch_release`` reads the stored ``dist.tar.zst`` exactly once, as a stream. Every raw byte
is hashed on its way in; the same stream is decompressed and walked by
``ingest.bundle.walk_bundle``, so each member is admitted by the very rules (types, paths,
duplicates, sizes, compression ratio) that admitted the bundle the release was made from,
and admitted members are written to disk by ``_TreeWriter``.

Design decisions:

* **Nothing unverified at ``dest``.** Members are unpacked into a fresh staging directory
  next to ``dest`` (same parent, hence same filesystem) and the staged tree is renamed into
  place only after the whole object was read and its sha256 matched. On any failure the
  staging directory is removed and ``dest`` is left as it was. ``dest``'s parent must
  therefore be writable and ``dest`` must not be a mount point: mount the emptyDir at the
  parent (``/srv``) and fetch into a child (``/srv/site``).
* **The checksum speaks first.** A release is immutable and its hash is known, so any
  difference in its bytes is the root cause of whatever else goes wrong. When a member
  check or the decoder fails half-way, the rest of the object is still read (up to the
  bundle size cap) and hashed: wrong bytes are reported as ``ChecksumMismatch`` (with the
  symptom in the message), right bytes with a bad member as that member's reason.
* **The operator's own limits, not the upload's.**  Members are checked with the limits the
  operator ingested the release with (the rendered pod gets them as ``MIOSA_MAX_*``), so
  what ingestion accepted is never refused here.  The compression-ratio cap is not applied:
  it guards against untrusted uploads, while a release is the operator's own output,
  verified by its sha256 (a plain tar holding 50 MiB of zeros is a tiny ``dist.tar.zst``).
  The size caps still bound what lands on disk, checksum or not.
* **Only canonical releases.** The format must be ``tar.zst``; ``.tar`` or ``.tar.gz``
  uploads are ingestion's input, never a release.
* **No symlink is ever followed.** Members are created relative to directory file
  descriptors with ``O_NOFOLLOW``, files with ``O_CREAT | O_EXCL`` (which refuses an
  existing name, symlink or not), so nothing can be written outside the staging tree even if
  something raced us inside it. Modes are set explicitly (0644 files, 0755 directories,
  whatever the umask) so a server running as another user can read the tree; file mtimes
  come from the release, directory mtimes are not restored (nothing depends on them).
* **Errors keep their class.** ``FetchRefused`` means the release itself is unacceptable
  (retrying will not help); store errors (``StoreError`` and subclasses) and local
  ``OSError`` (a full disk, an unusable ``dest``) propagate unchanged.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from ..ingest.bundle import CANONICAL_FORMAT, CHUNK, BundleRejected, Reason, walk_bundle
from ..ingest.limits import IngestLimits


class ByteStream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ReleaseSource(Protocol):
    """Anything that opens a release by name: the artifact endpoint's client, or a store."""

    def open_read(self, name: str) -> AbstractContextManager[ByteStream]: ...


FILE_MODE = 0o644
DIR_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MOUNT_POINT = (
    "the destination is a mount point, so the verified tree cannot be renamed onto it: "
    "mount the volume at its parent and fetch into a child directory"
)


class FetchRefused(Exception):
    """The release must not be served; ``reason`` is a CamelCase ``ingest.Reason`` value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = str(reason)
        self.message = message


@dataclass(frozen=True)
class FetchResult:
    files: int
    """Regular files unpacked."""
    total_bytes: int
    """Sum of their sizes."""
    sha256: str
    """The verified sha256 of the release object."""


def parse_sha256(value: str) -> str:
    """``"sha256:ABC…"`` or ``"abc…"`` -> 64 lowercase hex digits; anything else is a ValueError."""
    digest = value.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"expected sha256 {value!r} is not 64 hex digits")
    return digest


def release_limits(limits: IngestLimits) -> IngestLimits:
    """The limits a stored release is checked with: ingestion's, without the ratio cap."""
    return dataclasses.replace(limits, max_compression_ratio=math.inf)


def fetch_release(source: ReleaseSource, name: str, expected_sha256: str, dest: Path, limits: IngestLimits) -> FetchResult:
    """Download release ``name`` from ``source``, verify ``expected_sha256``, unpack it at ``dest``.

    ``limits`` are the operator's ingestion limits (``release_limits`` is applied here).
    ``dest`` must be absent, an empty directory, or a directory holding an earlier fetch
    (replaced only once the new tree is verified). Raises ``FetchRefused``, the source's own
    errors, ``OSError`` or, for a malformed ``expected_sha256``, ``ValueError``.
    """
    expected = parse_sha256(expected_sha256)
    limits = release_limits(limits)
    dest = Path(os.path.abspath(dest))
    _check_dest(dest)
    with source.open_read(name) as stream, _staging(dest) as staged:
        reader = _HashingReader(stream)
        result = _unpack_verified(reader, staged, expected, limits)
        _install(staged, dest)
    return result


def _unpack_verified(reader: _HashingReader, staged: Path, expected: str, limits: IngestLimits) -> FetchResult:
    try:
        walked = walk_bundle(cast(BinaryIO, reader), _TreeWriter(staged), limits=limits, formats=frozenset({CANONICAL_FORMAT}))
    except BundleRejected as rejected:
        # Read to the end: if the bytes are not the release, that is the real problem.
        if reader.drain(limit=limits.max_bundle_bytes):
            _verify(reader.hexdigest(), expected, symptom=rejected.message)
        raise FetchRefused(rejected.reason, rejected.message) from None
    reader.drain(limit=limits.max_bundle_bytes)  # the walk drained it already: a no-op
    _verify(reader.hexdigest(), expected)
    if walked.problem_after_end is not None:
        raise FetchRefused(Reason.CORRUPT_BUNDLE, walked.problem_after_end)
    return FetchResult(files=walked.files, total_bytes=walked.total_bytes, sha256=expected)


def _verify(actual: str, expected: str, symptom: str | None = None) -> None:
    if actual == expected:
        return
    detail = f" (it also fails to unpack: {symptom})" if symptom else ""
    raise FetchRefused(Reason.CHECKSUM_MISMATCH, f"release sha256 is {actual}, expected {expected}{detail}")


class _HashingReader:
    """The store stream as the walk sees it: every byte read is hashed and counted."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        self.count += len(data)
        return data

    def drain(self, limit: int) -> bool:
        """Read the rest; False if the object turned out larger than ``limit`` bytes."""
        while self.count <= limit:
            if not self.read(CHUNK):
                return True
        return False

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# --------------------------------------------------------------------------- unpacking


class _TreeWriter:
    """``MemberSink`` creating admitted members below ``root`` without following symlinks.

    Paths arrive normalised by the walk (relative, no ``..``, no empty components), and a
    name is never admitted twice, so ``O_EXCL`` can only fail if someone else wrote here.
    """

    def __init__(self, root: Path) -> None:
        self._root = root

    def add_dir(self, path: str, mtime: float) -> None:
        del mtime  # adding children changes it again; nothing depends on it
        os.close(self._open_dir(path.split("/")))

    def add_file(self, path: str, mtime: float, size: int, data: IO[bytes]) -> None:
        *parents, name = path.split("/")
        parent = self._open_dir(parents)
        try:
            fd = os.open(name, _NEW_FILE_FLAGS, FILE_MODE, dir_fd=parent)
        finally:
            os.close(parent)
        with open(fd, "wb", buffering=0, closefd=True) as out:
            os.fchmod(fd, FILE_MODE)  # the umask may have removed bits
            _copy_exact(data, out, size, path)
            os.utime(fd, (mtime, mtime))  # after the last write, which would reset it

    def _open_dir(self, parts: list[str]) -> int:
        """A descriptor of root/parts, creating missing directories (tar may omit them)."""
        fd = os.open(self._root, _DIR_FLAGS)
        for part in parts:
            try:
                os.mkdir(part, DIR_MODE, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False  # made earlier as some file's parent; O_DIRECTORY checks the kind
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child
            if created:
                os.fchmod(fd, DIR_MODE)
        return fd


def _copy_exact(data: IO[bytes], out: IO[bytes], size: int, path: str) -> None:
    remaining = size
    while remaining:
        chunk = data.read(min(CHUNK, remaining))
        if not chunk:
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"the data of {path!r} ends early (truncated?)")
        view = memoryview(chunk)
        while view:  # unbuffered writes may be partial
            view = view[out.write(view) or 0 :]
        remaining -= len(chunk)


# --------------------------------------------------------------------------- placing the tree


def _check_dest(dest: Path) -> None:
    """Refuse an unusable ``dest`` before downloading anything."""
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory (symlinks are not followed)", str(dest))
    if os.path.ismount(dest):
        raise OSError(errno.EBUSY, _MOUNT_POINT, str(dest))


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A private, empty directory next to ``dest``; removed on exit unless it was installed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        os.chmod(staged, DIR_MODE)  # mkdtemp's 0700 would hide the tree from the server
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # rmtree never follows symlinks


def _install(staged: Path, dest: Path) -> None:
    """Move the verified tree to ``dest``: one rename(2) when ``dest`` is absent or empty."""
    try:
        os.rename(staged, dest)
        return
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EBUSY):
            raise OSError(exc.errno, _MOUNT_POINT, str(dest)) from exc
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    # An earlier fetch lives there (a re-run init container): swap it out, then delete it.
    retired = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    try:
        os.rename(dest, retired / "tree")
        os.rename(staged, dest)
    finally:
        shutil.rmtree(retired, ignore_errors=True)
