"""Pack a directory into a reproducible ``.tar.zst`` bundle: same files, same bytes, same sha256.

What makes it reproducible (the sha256 is the version's identity, so a rebuild of the same
site must not look like a new artifact):

* members sorted by path (bytewise, ``/``-separated), directories before their contents;
* fixed metadata: mtime 0, uid/gid 0, no user or group names, mode 0644 for files and 0755
  for directories (0755 for files with any execute bit), PAX-free ustar/GNU headers;
* one zstd frame at a fixed level with the content size and checksum omitted, written by the
  same library version.

Only regular files and directories are packed: a symlink, socket or device in the
directory is an error (the operator would refuse the bundle anyway, ``UnsafeMemberType``).
The archive is written to a file, never held in memory.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

import zstandard

ZSTD_LEVEL = 10


class PackError(ValueError):
    pass


def members(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every directory and file under ``root``, in archive order."""
    found: list[tuple[str, Path]] = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        base = Path(directory)
        for name in subdirs + files:
            path = base / name
            mode = path.lstat().st_mode
            relative = path.relative_to(root).as_posix()
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise PackError(f"{relative}: only regular files and directories can be published (not links or devices)")
            found.append((relative, path))
    return sorted(found, key=lambda item: item[0].encode())


def _info(name: str, path: Path) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode, info.size = tarfile.DIRTYPE, 0o755, 0
    else:
        info.type, info.size = tarfile.REGTYPE, st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def pack_directory(root: Path, out: BinaryIO) -> int:
    """Write the bundle of ``root`` to ``out``; returns the number of files."""
    if not root.is_dir():
        raise PackError(f"{root} is not a directory")
    entries = members(root)
    files = 0
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False)
    with (
        compressor.stream_writer(out, closefd=False) as zstd_out,
        tarfile.open(fileobj=zstd_out, mode="w|", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name, path in entries:
            info = _info(name, path)
            if info.isdir():
                tar.addfile(info)
                continue
            with open(path, "rb") as data:
                tar.addfile(info, data)
            files += 1
    if files == 0:
        raise PackError(f"{root} has no files to publish")
    return files
