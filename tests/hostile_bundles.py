"""Hostile bundles, built deterministically: the shapes of issue 9 and the tarfile CVEs.

Shared by the unit tests (``tests/unit/test_ingest_limits.py``), the end-to-end tests
(``tests/e2e/test_hostile_ingestion.py``) and the ingestion memory benchmark
(``benchmarks/hostile.py``), so all three measure the very same bytes. Each builder returns
the bundle; ``SHAPES`` names each with the reason ingestion must end in.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

BLOCK = tarfile.BLOCKSIZE
MTIME = 1_700_000_000
PAGE = b"<!doctype html><h1>hello</h1>\n"


# --------------------------------------------------------------------------- raw tar pieces


def header(name: bytes, size: int = 0, kind: bytes = b"0", size_field: bytes | None = None) -> bytes:
    """A ustar header written by hand (tarfile refuses to write most of what follows)."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = b"%07o\x00" % 0o644
    block[108:116] = block[116:124] = b"%07o\x00" % 0
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[136:148] = b"%011o\x00" % MTIME
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def member(name: bytes, data: bytes = b"", kind: bytes = b"0") -> bytes:
    return header(name, len(data), kind) + data + bytes(-len(data) % BLOCK)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size += 1
    return str(size).encode() + body


def pax_header(records: bytes, kind: bytes = b"x") -> bytes:
    return header(b"PaxHeader", len(records), kind) + records + bytes(-len(records) % BLOCK)


def end() -> bytes:
    return bytes(2 * BLOCK)


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zst(data: bytes, **params: int) -> bytes:
    if params:
        compressor = zstandard.ZstdCompressor(compression_params=zstandard.ZstdCompressionParameters(**params))
        out = io.BytesIO()
        with compressor.stream_writer(out, closefd=False) as writer:  # no content size: the window is declared
            writer.write(data)
        return out.getvalue()
    return zstandard.ZstdCompressor(level=3).compress(data)


# --------------------------------------------------------------------------- the shapes


def deep_directories(count: int = 10_000, depth: int = 500, noise: int = 0) -> bytes:
    """``count`` directories ``depth`` components deep, each with a distinct first component:
    a plain tar of ~20 MB (issue 9: 3.3 GiB and 38 s of CPU before the depth cap). ``noise``
    random bytes first keep a compressed copy under the compression-ratio cap."""
    parts = [member(b"index.html", PAGE), member(b"noise.bin", random.Random(3).randbytes(noise))]
    for n in range(count):
        name = b"d%05d/" % n + b"a/" * (depth - 1)
        parts.append(pax_header(pax_record(b"path", name)) + header(b"d", 0, b"5"))
    return b"".join(parts) + end()


def widest_accepted(count: int = 10_000, depth: int = 32, path_bytes: int = 1000) -> bytes:
    """The worst a bundle can do within the default caps: ``count`` files, each ``depth``
    levels deep with a ~``path_bytes`` name, no two sharing a parent. It is accepted."""
    segment = max(1, (path_bytes - 20) // depth - 1)
    parts = [member(b"index.html", PAGE)]
    for n in range(count - 1):
        dirs = "/".join(f"{n:06d}{'x' * (segment - 6)}" if level == 0 else "y" * segment for level in range(depth - 1))
        parts.append(pax_header(pax_record(b"path", f"{dirs}/f.html".encode())) + member(b"f.html", b"x"))
    return b"".join(parts) + end()


def gnu_sparse_map(map_bytes: int = 80 << 20) -> bytes:
    """A regular member whose pax header says GNU sparse 1.0: CPython's reader takes the data
    as a sparse map and reads it to the end of the input (issue 9: 820 MiB for 80 MiB)."""
    records = pax_record(b"GNU.sparse.major", b"1") + pax_record(b"GNU.sparse.minor", b"0")
    records += pax_record(b"GNU.sparse.name", b"index.html") + pax_record(b"GNU.sparse.realsize", b"1")
    sparse_map = b"99999999999\n" + b"1\n" * ((map_bytes - 12) // 2)
    return pax_header(records) + member(b"GNUSparseFile.0/index.html", sparse_map) + end()


def global_sparse() -> bytes:
    """The same, from a *global* pax header (applies to every later member)."""
    records = pax_record(b"GNU.sparse.major", b"1") + pax_record(b"GNU.sparse.minor", b"0")
    return pax_header(records, kind=b"g") + member(b"index.html", b"1\n1\n") + end()


def huge_zstd_window(window_log: int = 27) -> bytes:
    """A .tar.zst whose frame declares a 128 MiB window (issue 9: ~184 MiB per ingestion)."""
    noise = random.Random(9).randbytes(4 << 20)  # incompressible: the ratio cap stays out of it
    return zst(tar_of({"index.html": PAGE, "noise.bin": noise}), window_log=window_log, compression_level=3)


def slow_pax_headers(count: int = 100, digits: int = 60_000) -> bytes:
    """CVE-2024-6232: pax headers full of digits, on which tarfile's (unpatched) regular
    expressions backtrack quadratically (~9 s of CPU each for 64 KiB on 3.11.7)."""
    parts = [member(b"index.html", PAGE)]
    for n in range(count):
        records = pax_record(b"comment", b"1" * digits) + pax_record(b"path", b"%d" % n + b"1" * 900)
        parts.append(pax_header(records) + member(b"p%d.html" % n, b"x"))
    return b"".join(parts) + end()


def negative_size() -> bytes:
    """CVE-2025-8194: a member whose base-256 size is negative, which moves tarfile's offset
    backwards (an endless loop in unpatched interpreters)."""
    negative = b"\xff" + (256**11 - 2 * BLOCK).to_bytes(11, "big")
    return member(b"index.html", PAGE) + header(b"loop.html", size_field=negative) + member(b"x", b"x") + end()


def negative_pax_size() -> bytes:
    return member(b"index.html", PAGE) + pax_header(pax_record(b"size", b"-1024")) + member(b"loop.html", b"x") + end()


def compression_bomb(size: int = 400 << 20) -> bytes:
    """A 400 MiB file of zeros in ~13 KB of zstd (the ratio cap stops it after a few MiB)."""
    compressor = zstandard.ZstdCompressor(level=3)
    out = io.BytesIO()
    with compressor.stream_writer(out, closefd=False) as writer:
        writer.write(header(b"index.html", size))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            writer.write(chunk)
        writer.write(end())
    return out.getvalue()


@dataclass(frozen=True)
class Shape:
    build: Callable[[], bytes]
    reason: str | None
    """The reason ingestion must end in; ``None``: accepted."""
    what: str


SHAPES: dict[str, Shape] = {
    "deep directories": Shape(deep_directories, "UnsafePath", "10,000 directories 500 levels deep (plain tar)"),
    "deep directories, tar.zst": Shape(
        lambda: zst(deep_directories(noise=160 << 10)), "UnsafePath", "the same as a ~190 KB .tar.zst, under the ratio cap"
    ),
    "GNU sparse map": Shape(gnu_sparse_map, "UnsafeMemberType", "pax GNU.sparse 1.0 on an 80 MiB member"),
    "global GNU sparse": Shape(global_sparse, "UnsafeMemberType", "GNU.sparse keys in a global pax header"),
    "128 MiB zstd window": Shape(huge_zstd_window, "ZstdWindowTooLarge", "a zstd frame declaring a 128 MiB window"),
    "slow pax headers": Shape(slow_pax_headers, None, "CVE-2024-6232: 100 pax headers of 60,000 digits"),
    "negative size": Shape(negative_size, "CorruptBundle", "CVE-2025-8194: a base-256 negative member size"),
    "negative pax size": Shape(negative_pax_size, "CorruptBundle", "a pax size of -1024"),
    "compression bomb": Shape(compression_bomb, "CompressionRatioExceeded", "400 MiB of zeros in a ~13 KB .tar.zst"),
    "widest accepted": Shape(widest_accepted, None, "10,000 files 32 levels deep, 1,000-byte paths, all distinct"),
}
