"""Strict tar headers, member paths, and the admission of each member.

The fourth stage of a walk (see ``bundle``): ``Admission`` checks every member (type, path,
duplicates, sizes) the moment its header is parsed, before its data is read.

Design decisions:

* **tarfile is lenient; we are not.** Stream-mode ``tarfile`` treats an unreadable header in
  the middle of an archive as a normal end. A ``TarInfo`` subclass (``tarinfo=``, the
  documented extension point, built by ``strict_tarinfo``) turns header errors into
  ``CorruptBundle``, records in an ``EndMarker`` that a real end-of-archive block was seen,
  caps extended headers (pax, GNU long names) that tarfile would otherwise read into
  memory whatever their size, refuses negative sizes (they move tarfile's offset backwards,
  CVE-2025-8194) and GNU sparse members before tarfile reads their maps, and hands tarfile
  only the pax records ``pax.sanitise_pax`` re-emits (its ``_proc_pax``, one of the
  ``_proc_*`` methods tarfile documents as overridable, replays them).
* **What is kept per member is bounded by configuration.** Duplicate and file-as-directory
  checks need every path and every implied parent directory seen so far; keeping them as
  strings cost ~3.3 GiB for 10,000 members 500 levels deep. Paths are capped at
  ``max_path_depth`` components, and ``Admission`` keeps 64-bit keyed BLAKE2b digests of
  paths, not the paths: at most ``max_members x max_path_depth`` small integers (~22 MiB at
  the defaults). The key is random per ingestion, so a bundle cannot be built to collide.
* Only regular files and directories are admitted; the type is decided here, not by
  ``TarInfo.isreg()`` (which also accepts contiguous and sparse files).
* Member names are normalised (leading ``./``, ``.`` components and repeated ``/`` go);
  two members with the same normalised name, or a file used as a directory, are
  ``DuplicateMember``: whoever unpacks or serves the release would otherwise have to pick
  one silently. Names must be valid UTF-8 without control characters.
* ``EmptyBundle`` and ``MissingEntrypoint`` are only known once every member was seen;
  ``Admission.check_complete`` is called by ingestion after the checksum (see ``bundle``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass, field
from typing import Any

from .common import BLOCK, human, show
from .errors import BundleRejected, Reason
from .limits import IngestLimits
from .pax import sanitise_pax

MAX_EXTENDED_HEADER_BYTES = 64 << 10
MAX_EXTENSION_CHAIN = 16

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


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
class EndMarker:
    seen: bool = False


# Python 3.13.4+, 3.12.11+ and 3.11.13+ (the 2025 tarfile security fixes, which Debian's
# python3 carries) parse every header through the private ``TarInfo._frombuf``; the public
# ``frombuf`` only delegates to it and ``fromtarfile`` no longer calls it.  Older versions
# call ``frombuf``.  The strict parser replaces whichever one parses headers, so that it runs
# exactly once per header on both (found by running the operator image on the real node:
# with ``frombuf`` alone, every bundle was refused for want of an end-of-archive marker).
_HEADER_HOOK = "_frombuf" if hasattr(tarfile.TarInfo, "_frombuf") else "frombuf"


def strict_tarinfo(limits: IngestLimits, end: EndMarker) -> type[tarfile.TarInfo]:
    """A ``TarInfo`` class whose header parsing is strict and bounded (one per ingestion)."""
    chain = 0  # consecutive extended headers: tarfile follows them recursively

    class StrictTarInfo(tarfile.TarInfo):
        def _proc_pax(self, tarfile_: tarfile.TarFile) -> Any:
            stream = tarfile_.fileobj
            padded = self._block(self.size)  # type: ignore[attr-defined]  # tarfile's private record rounding
            data = stream.read(padded)
            if len(data) != padded:
                raise BundleRejected(Reason.CORRUPT_BUNDLE, "the tar stream ends inside a pax header (truncated?)")
            is_global = self.type == tarfile.XGLTYPE
            clean = sanitise_pax(data[: self.size], is_global=is_global, max_path_bytes=limits.max_path_bytes)
            tarfile_.fileobj = _Replay(stream, clean.ljust(padded, b"\0"))
            try:
                return super()._proc_pax(tarfile_)  # type: ignore[misc]
            finally:
                tarfile_.fileobj = stream

    def parse(cls: type[StrictTarInfo], buf: bytes | bytearray, encoding: str, errors: str, **options: Any) -> Any:
        nonlocal chain
        lenient = getattr(super(StrictTarInfo, cls), _HEADER_HOOK)
        if len(buf) != BLOCK:
            raise BundleRejected(Reason.CORRUPT_BUNDLE, "the tar stream ends without an end-of-archive marker (truncated?)")
        if buf.count(0) == BLOCK:
            end.seen = True
            return lenient(buf, encoding, errors, **options)  # raises tarfile's own end signal
        try:
            info = lenient(buf, encoding, errors, **options)
        except tarfile.HeaderError as exc:
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"invalid tar header: {exc}") from None
        chain = chain + 1 if info.type in _EXTENSION_TYPES else 0
        _check_header(info, chain, limits)
        return info

    setattr(StrictTarInfo, _HEADER_HOOK, classmethod(parse))
    return StrictTarInfo


class _Replay:
    """``tarfile``'s stream for the duration of one ``_proc_pax``: its first read (the pax
    records, which we have already read) gets the sanitised records instead; everything
    else goes to the real stream, whose position is already past them."""

    def __init__(self, stream: Any, first: bytes) -> None:
        self._stream = stream
        self._first: bytes | None = first

    def read(self, size: int) -> bytes:
        if self._first is None:
            return self._stream.read(size)
        first, self._first = self._first, None
        if size != len(first):  # tarfile reads the whole padded header at once, in every version
            raise BundleRejected(Reason.CORRUPT_BUNDLE, "unexpected pax header read (unsupported tarfile version)")
        return first

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _check_header(info: tarfile.TarInfo, chain: int, limits: IngestLimits) -> None:
    """Checks that must happen before tarfile reads whatever the header announces."""
    if info.size < 0:  # base-256 sizes can be negative: tarfile would seek backwards
        raise BundleRejected(Reason.CORRUPT_BUNDLE, f"a member header declares a negative size ({info.size})")
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
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} contains a NUL byte")
    if "\\" in name:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} contains a backslash")
    if _CONTROL_CHARS.search(name):
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} contains control characters")
    if name.startswith("/"):
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} is an absolute path")
    if is_file and name.endswith("/"):
        raise BundleRejected(Reason.UNSAFE_PATH, f"regular file {show(name)} has a directory name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} contains a '..' component")
    if not parts:
        return None
    path = "/".join(parts)
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} is not valid UTF-8") from None
    if len(encoded) > max_bytes:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(name)} is longer than {max_bytes} bytes")
    return path


def check_depth(path: str, max_depth: int) -> None:
    depth = path.count("/") + 1
    if depth > max_depth:
        raise BundleRejected(Reason.UNSAFE_PATH, f"{show(path)} is {depth} levels deep (limit {max_depth})")


class PathDigests:
    """Keyed 64-bit digests of a path and of each of its parents, without keeping strings."""

    def __init__(self) -> None:
        self._key = os.urandom(16)

    def of(self, path: str) -> list[int]:
        """Digests of ``a``, ``a/b``, ``a/b/c`` for ``a/b/c`` (the path itself last)."""
        running = hashlib.blake2b(key=self._key, digest_size=8)
        digests = []
        for depth, part in enumerate(path.split("/")):
            running.update(b"/" + part.encode() if depth else part.encode())
            digests.append(int.from_bytes(running.copy().digest(), "little"))
        return digests


@dataclass
class Admission:
    """Checks members one by one and keeps the tallies that become the manifest."""

    limits: IngestLimits
    members: int = 0
    files: int = 0
    dirs: int = 0
    total_bytes: int = 0
    _digests: PathDigests = field(default_factory=PathDigests)
    _files: set[int] = field(default_factory=set)
    _dirs: set[int] = field(default_factory=set)
    _parents: set[int] = field(default_factory=set)

    def admit(self, member: tarfile.TarInfo) -> str | None:
        """The member's normalised path (None for the root entry), or BundleRejected."""
        self.members += 1
        if self.members > self.limits.max_members:
            raise BundleRejected(Reason.TOO_MANY_MEMBERS, f"more than {self.limits.max_members} members")
        is_file = _is_regular_file(member)
        path = normalise_member_path(member.name, self.limits.max_path_bytes, is_file=is_file)
        if path is None:
            if is_file:
                raise BundleRejected(Reason.UNSAFE_PATH, f"regular file {show(member.name)} has no name")
            return None
        check_depth(path, self.limits.max_path_depth)
        if member.size < 0:  # a pax or base-256 size tarfile let through
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"{show(path)} declares a negative size")
        self._claim(path, is_file)
        if is_file:
            self._count_file(path, member.size)
        elif member.size:
            raise BundleRejected(Reason.CORRUPT_BUNDLE, f"directory {show(path)} declares {member.size} bytes of data")
        else:
            self.dirs += 1
        return path

    def _claim(self, path: str, is_file: bool) -> None:
        *parents, own = self._digests.of(path)
        for depth, parent in enumerate(parents, start=1):
            if parent in self._files:
                inside = "/".join(path.split("/")[:depth])
                raise BundleRejected(Reason.DUPLICATE_MEMBER, f"{show(path)} is inside {show(inside)}, which is a file")
        if own in self._files or own in self._dirs:
            raise BundleRejected(Reason.DUPLICATE_MEMBER, f"{show(path)} appears more than once")
        if is_file and own in self._parents:
            raise BundleRejected(Reason.DUPLICATE_MEMBER, f"{show(path)} is both a file and a directory")
        (self._files if is_file else self._dirs).add(own)
        self._parents.update(parents)

    def _count_file(self, path: str, size: int) -> None:
        if size > self.limits.max_file_bytes:
            raise BundleRejected(Reason.FILE_TOO_LARGE, f"{show(path)} is {size} bytes (limit {self.limits.max_file_bytes})")
        self.files += 1
        self.total_bytes += size
        if self.total_bytes > self.limits.max_total_bytes:
            raise BundleRejected(
                Reason.BUNDLE_TOO_LARGE,
                f"the files add up to more than {human(self.limits.max_total_bytes)} "
                f"({self.limits.max_total_bytes} bytes) uncompressed",
            )

    def check_complete(self, entrypoint: str) -> None:
        """Once every member was seen: the bundle has a file, and ``entrypoint`` is one."""
        if not self.files:
            raise BundleRejected(Reason.EMPTY_BUNDLE, "the bundle contains no regular file")
        own = self._digests.of(entrypoint)[-1]
        if own not in self._files:
            where = "is a directory" if own in self._dirs or own in self._parents else "is missing"
            raise BundleRejected(Reason.MISSING_ENTRYPOINT, f"entrypoint {show(entrypoint)} {where}")


def _is_regular_file(member: tarfile.TarInfo) -> bool:
    # tarfile's isreg() also says yes to contiguous and sparse files: decide ourselves.
    if member.type in _FILE_TYPES and member.sparse is None:
        return True
    if member.type == tarfile.DIRTYPE:
        return False
    kind = "sparse file" if member.sparse is not None else _TYPE_NAMES.get(member.type)
    raise _unsafe_type(member.name, kind or f"member of type {member.type.decode('ascii', 'backslashreplace')!r}")


def _unsafe_type(name: str, kind: str) -> BundleRejected:
    return BundleRejected(Reason.UNSAFE_MEMBER_TYPE, f"{show(name)} is a {kind}; only regular files and directories are allowed")
