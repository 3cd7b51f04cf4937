"""pax extended headers, read by us before CPython's ``tarfile`` sees them.

``tarfile``'s own pax parsing has been the door for several attacks, and the operator may
run on any interpreter the platform gives it:

* CVE-2024-6232: the regular expressions that look for ``hdrcharset`` and for each record
  backtrack quadratically (a 64 KiB header of digits costs ~9 s of CPU on 3.11.7, and a bundle
  may hold thousands of them);
* ``GNU.sparse.*`` records make ``tarfile`` read a "sparse map" from the data that follows,
  growing a list until the end of the input (an 80 MiB tar used 820 MiB), or rename and resize
  the member (``GNU.sparse.name``, ``GNU.sparse.realsize``);
* a negative or garbled ``size`` moves the reader's offset backwards (CVE-2025-8194).

Design decision: **tarfile only ever parses what we re-emit.** ``sanitise_pax`` parses the
records with a linear scanner, refuses what is unsafe (``GNU.sparse.*``: ``UnsafeMemberType``;
a malformed record, a non-decimal ``size`` or ``mtime``, ``path`` or ``size`` in a *global*
header: ``CorruptBundle``; a ``path`` longer than the path cap: ``UnsafePath``), keeps only
the records ingestion uses (the last ``path``, ``size``, ``mtime``, the first ``hdrcharset``)
byte for byte, drops the rest (owners, times, xattrs, comments: the canonical release does
not carry them) and pads the result with NUL bytes to the original length, where every
CPython version stops parsing. What tarfile's regular expressions see is therefore at most
one path plus a few short numbers, whatever the bundle holds.
"""

from __future__ import annotations

import re

from .common import show
from .errors import BundleRejected, Reason

_MAX_LENGTH_DIGITS = 20
_KEEP_LAST = (b"path", b"size", b"mtime")
_SIZE = re.compile(rb"\d{1,19}")
_MTIME = re.compile(rb"-?\d{1,20}(\.\d{0,20})?")
_CHARSETS = (b"BINARY", b"ISO-IR 10646 2000 UTF-8")


def sanitise_pax(data: bytes, *, is_global: bool, max_path_bytes: int) -> bytes:
    """The records of one pax header that ``tarfile`` may parse, NUL-padded to ``len(data)``."""
    kept: dict[bytes, bytes] = {}
    for keyword, value, record in _records(data):
        if keyword.startswith(b"GNU.sparse."):
            raise BundleRejected(
                Reason.UNSAFE_MEMBER_TYPE,
                f"a pax header carries {show(keyword.decode('utf-8', 'backslashreplace'))}: "
                "sparse files are not allowed; only regular files and directories are",
            )
        if keyword in _KEEP_LAST:
            _check_value(keyword, value, is_global, max_path_bytes)
            kept[keyword] = record
        elif keyword == b"hdrcharset" and value in _CHARSETS:
            kept.setdefault(keyword, record)
    # hdrcharset first, as writers put it, so it governs the path that follows.
    ordered = [kept[k] for k in (b"hdrcharset", *_KEEP_LAST) if k in kept]
    return b"".join(ordered).ljust(len(data), b"\0")


def _records(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """``(keyword, value, whole record)`` for each ``"<length> <keyword>=<value>\\n"``.

    Linear: every search is bounded by the record's own declared length.
    """
    records = []
    pos, end = 0, len(data)
    while pos < end and data[pos] != 0:
        space = data.find(b" ", pos, pos + _MAX_LENGTH_DIGITS + 1)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise _corrupt("a pax record does not start with its length")
        length = int(digits)
        if length < 5 or pos + length > end:
            raise _corrupt(f"a pax record declares {length} bytes")
        record = data[pos : pos + length]
        keyword, equals, value = record[len(digits) + 1 : -1].partition(b"=")
        if not keyword or not equals or record[-1:] != b"\n":
            raise _corrupt("a pax record is not 'keyword=value' followed by a newline")
        records.append((keyword, value, record))
        pos += length
    if data[pos:].strip(b"\0"):
        raise _corrupt("data after the NUL padding of a pax header")
    return records


def _check_value(keyword: bytes, value: bytes, is_global: bool, max_path_bytes: int) -> None:
    name = keyword.decode()
    if is_global and keyword in (b"path", b"size"):
        raise _corrupt(f"a global pax header sets {name!r} for every member")
    if keyword == b"path" and len(value) > max_path_bytes:
        raise BundleRejected(Reason.UNSAFE_PATH, f"a member name is longer than {max_path_bytes} bytes")
    if keyword == b"size" and not _SIZE.fullmatch(value):
        raise _corrupt(f"pax size {show(value.decode('ascii', 'backslashreplace'))} is not a byte count")
    if keyword == b"mtime" and not _MTIME.fullmatch(value):
        raise _corrupt(f"pax mtime {show(value.decode('ascii', 'backslashreplace'))} is not a time")


def _corrupt(message: str) -> BundleRejected:
    return BundleRejected(Reason.CORRUPT_BUNDLE, message)
