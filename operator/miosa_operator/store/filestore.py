"""Local-directory artifact store for ``file://`` URIs (the embedded default).

Design decisions:

* **Atomic write-once with ``link(2)``.** Data goes to a temp file in the destination
  directory, is fsynced, then hard-linked to the final name. ``link`` fails with ``EEXIST``
  if the name exists, so exactly one of many concurrent writers wins and readers never see
  a half-written object. ``rename`` would silently replace an existing file, which is
  exactly what must never happen to a release.
* **Paths are checked, not trusted.** A URI whose path has a ``..`` component is refused
  outright; with a ``root`` every path must resolve (symlinks included) inside it, so a
  tenant-supplied ``file://`` URI cannot read arbitrary files of the operator pod.
* **Temp files are invisible.** In-flight ``.tmp-*.part`` files are skipped by ``list`` so
  retention never counts or deletes someone else's upload in progress.
* Empty directories left by ``delete`` are kept: pruning them would race with a concurrent
  ``put_if_absent`` that just created the directory.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from .base import (
    COPY_CHUNK,
    DEFAULT_CONTENT_TYPE,
    FILE_SCHEME,
    ArtifactNotFound,
    ObjectInfo,
    StoreAccessDenied,
    StoreError,
    TransientStoreError,
    parse_uri,
)

_TMP_PREFIX = ".tmp-"
_TMP_SUFFIX = ".part"
# Errors that tend to go away by themselves (busy/stale NFS handles, a full disk that
# retention will free): retry rather than fail a version for good.
_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE, errno.ENOSPC, errno.EDQUOT, errno.EIO}
)
# The operator may not read or write there: a person must fix permissions or the mount.
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def _os_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in _DENIED_ERRNOS:
        return StoreAccessDenied(f"{what}: {exc.strerror}")
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientStoreError(f"{what}: {exc}")
    return StoreError(f"{what}: {exc}")


class FileStore:
    """``ArtifactStore`` over the local filesystem."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = os.path.realpath(root) if root is not None else None

    @property
    def root(self) -> str | None:
        return self._root

    # ------------------------------------------------------------------ paths

    def path_for(self, uri: str) -> str:
        """The absolute, normalised filesystem path behind a ``file://`` URI."""
        path = self._checked_path(uri)
        return os.path.normpath(path)

    def _checked_path(self, uri: str) -> str:
        scheme, _, path = parse_uri(uri)
        if scheme != FILE_SCHEME:
            raise StoreError(f"FileStore only handles file:// URIs: {uri!r}")
        if ".." in path.split("/"):
            raise StoreError(f"path with '..' components refused: {uri!r}")
        if self._root is not None:
            # realpath also resolves symlinks, so a link inside the root cannot point out.
            real = os.path.realpath(path)
            if os.path.commonpath([self._root, real]) != self._root:
                raise StoreError(f"{uri!r} is outside the store root {self._root}")
        return path

    # ------------------------------------------------------------------ reads

    def open_read(self, uri: str) -> BinaryIO:
        path = self.path_for(uri)
        try:
            return open(path, "rb", buffering=COPY_CHUNK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ArtifactNotFound(f"{uri} does not exist") from exc
        except OSError as exc:
            raise _os_error(exc, f"cannot open {uri}") from exc

    def head(self, uri: str) -> ObjectInfo | None:
        path = self.path_for(uri)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _os_error(exc, f"cannot stat {uri}") from exc
        return ObjectInfo(uri=uri, size=st.st_size) if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        prefix = self._checked_path(prefix_uri)
        base = prefix if prefix.endswith("/") else os.path.dirname(prefix)
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            # Only descend where names can still match the prefix (S3-style string prefix).
            dirnames[:] = [d for d in dirnames if _may_match(os.path.join(dirpath, d) + "/", prefix)]
            for name in filenames:
                full = os.path.join(dirpath, name)
                if not full.startswith(prefix) or _is_temp(name):
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue  # deleted while we were walking
                if stat.S_ISREG(st.st_mode):
                    found.append(ObjectInfo(uri=f"file://{full}", size=st.st_size))
        # Sorted like S3 listings, so callers behave the same on both backends.
        yield from sorted(found, key=lambda info: info.uri)

    # ------------------------------------------------------------------ writes

    def put_if_absent(
        self,
        uri: str,
        source: BinaryIO,
        size: int | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> bool:
        del content_type  # a plain file has nowhere to keep it
        path = self.path_for(uri)
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
            if os.path.lexists(path):
                return False  # cheap early answer; the link below is the real arbiter
            return self._write_new(path, parent, source, size, uri)
        except OSError as exc:
            raise _os_error(exc, f"cannot write {uri}") from exc

    def put_bytes_if_absent(self, uri: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> bool:
        return self.put_if_absent(uri, io.BytesIO(data), size=len(data), content_type=content_type)

    def _write_new(self, path: str, parent: str, source: BinaryIO, size: int | None, uri: str) -> bool:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide releases from servers
                written = _copy(source, out)
                os.fsync(out.fileno())
            if size is not None and written != size:
                raise StoreError(f"{uri}: source gave {written} bytes, expected {size}; not stored")
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            _fsync_dir(parent)
            return True
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def delete(self, uri: str) -> bool:
        path = self.path_for(uri)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except IsADirectoryError as exc:
            raise StoreError(f"{uri} is a directory, not an object") from exc
        except OSError as exc:
            raise _os_error(exc, f"cannot delete {uri}") from exc
        return True


def _copy(source: BinaryIO, out: io.RawIOBase | BinaryIO) -> int:
    written = 0
    while chunk := source.read(COPY_CHUNK):
        view = memoryview(chunk)
        while view:  # unbuffered writes may be partial
            n = out.write(view)
            view = view[n or 0 :]
        written += len(chunk)
    return written


def _fsync_dir(path: str) -> None:
    """Make the new directory entry durable too (the file's own fsync does not cover it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _may_match(dir_with_slash: str, prefix: str) -> bool:
    return dir_with_slash.startswith(prefix) or prefix.startswith(dir_with_slash)


def _is_temp(name: str) -> bool:
    return name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX)
