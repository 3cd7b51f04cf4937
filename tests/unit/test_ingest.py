"""Bundle ingestion: valid bundles in every format, determinism, and hostile or broken
bundles, each asserting the exact rejection reason."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import re
import tarfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone

import pytest
import zstandard

from miosa_operator.ingest import (
    BuildLog,
    BundleRejected,
    IngestLimits,
    IngestResult,
    ingest_bundle,
)
from miosa_operator.ingest.limits import parse_size

MTIME = 1_700_000_000
SITE: list[tuple[str, bytes | None]] = [  # None = directory
    ("./", None),
    ("./index.html", b"<!doctype html><h1>hello</h1>\n"),
    ("./assets", None),
    ("./assets/app.js", b"console.log('hi');\n" * 100),
    ("./assets/logo.svg", b"<svg/>"),
    ("404.html", b"not found"),
    ("empty.txt", b""),
]
SITE_FILES = {"index.html", "assets/app.js", "assets/logo.svg", "404.html", "empty.txt"}


# --------------------------------------------------------------------------- builders


def make_tar(members: Iterable[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 1000, 1000, "dev", "dev"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def special_tar(kind: bytes, name: str = "evil", linkname: str = "", size: int = 0) -> bytes:
    """index.html plus one member of a given type, written by tarfile itself."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        page = tarfile.TarInfo("index.html")
        page.size = 2
        archive.addfile(page, io.BytesIO(b"hi"))
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.devmajor, info.devminor = kind, linkname, 1, 3
        info.size = size
        archive.addfile(info, io.BytesIO(bytes(size)) if size else None)
    return buffer.getvalue()


def raw_header(name: bytes, size: int = 0, kind: bytes = b"0", linkname: bytes = b"", mode: int = 0o644) -> bytes:
    """A ustar header built by hand, for names and fields tarfile refuses to write."""
    header = bytearray(tarfile.BLOCKSIZE)
    header[0 : len(name)] = name
    header[100:108] = b"%07o\x00" % mode
    header[108:116] = b"%07o\x00" % 0
    header[116:124] = b"%07o\x00" % 0
    header[124:136] = b"%011o\x00" % size
    header[136:148] = b"%011o\x00" % MTIME
    header[148:156] = b" " * 8
    header[156:157] = kind
    header[157 : 157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header)


def raw_member(name: bytes, data: bytes = b"", kind: bytes = b"0") -> bytes:
    padding = bytes(-len(data) % tarfile.BLOCKSIZE)
    return raw_header(name, len(data), kind) + data + padding


def pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size += 1
    return str(size).encode() + body


def raw_pax_member(records: bytes, name: bytes, data: bytes) -> bytes:
    pad = bytes(-len(records) % tarfile.BLOCKSIZE)
    return raw_header(b"PaxHeader", len(records), b"x") + records + pad + raw_member(name, data)


def raw_tar(*members: bytes, end: bool = True) -> bytes:
    body = b"".join(members)
    return body + bytes(2 * tarfile.BLOCKSIZE) if end else body


def zst(data: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ingest(
    data: bytes, expected: str | None = None, limits: IngestLimits | None = None, **kwargs: object
) -> tuple[IngestResult, bytes]:
    out = io.BytesIO()
    result = ingest_bundle(
        io.BytesIO(data),
        out,
        expected_sha256=sha(data) if expected is None else expected,
        limits=limits or IngestLimits(),
        **kwargs,  # type: ignore[arg-type]
    )
    return result, out.getvalue()


def rejection(data: bytes, expected: str | None = None, limits: IngestLimits | None = None, **kwargs: object) -> str:
    with pytest.raises(BundleRejected) as caught:
        ingest(data, expected, limits, **kwargs)
    assert caught.value.message
    return caught.value.reason


def unpack(canonical: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Members of a canonical release with their data (None for directories)."""
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(canonical)).read()
    unpacked: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            unpacked.append((member, extracted.read() if extracted else None))
    return unpacked


# --------------------------------------------------------------------------- valid bundles

COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {"tar.zst": zst, "tar.gz": gz, "tar": lambda data: data}


@pytest.mark.parametrize("fmt", list(COMPRESSIONS))
def test_valid_bundle_in_every_format(fmt: str) -> None:
    bundle = COMPRESSIONS[fmt](make_tar(SITE))
    result, canonical = ingest(bundle)
    assert result.format == fmt
    assert result.manifest.files == len(SITE_FILES)
    assert result.manifest.total_bytes == sum(len(d) for _, d in SITE if d is not None)
    assert result.manifest.entrypoint == "index.html"
    assert result.source_sha256 == sha(bundle)
    assert result.source_bytes == len(bundle)
    assert result.canonical_sha256 == sha(canonical)
    assert result.canonical_bytes == len(canonical)
    assert canonical.startswith(b"\x28\xb5\x2f\xfd")


@pytest.mark.parametrize("fmt", list(COMPRESSIONS))
def test_canonical_output_is_deterministic(fmt: str) -> None:
    bundle = COMPRESSIONS[fmt](make_tar(SITE))
    first, first_bytes = ingest(bundle)
    second, second_bytes = ingest(bundle)
    assert first_bytes == second_bytes
    assert first.canonical_sha256 == second.canonical_sha256


def test_same_content_gives_same_release_whatever_the_packaging() -> None:
    plain = make_tar(SITE)
    gnu = make_tar(SITE, fmt=tarfile.GNU_FORMAT)
    hashes = {ingest(pack)[0].canonical_sha256 for pack in (plain, zst(plain, 19), gz(plain), gnu, zst(gnu, 1))}
    assert len(hashes) == 1


def test_canonical_unpacks_to_the_same_files_with_normalised_metadata() -> None:
    _, canonical = ingest(zst(make_tar(SITE)))
    unpacked = unpack(canonical)
    expected = [(name.removeprefix("./"), data) for name, data in SITE if name != "./"]
    assert [(member.name, data) for member, data in unpacked] == expected  # original order
    for member, data in unpacked:
        assert member.uid == member.gid == 0
        assert member.uname == member.gname == ""
        assert member.mtime == MTIME
        assert member.mode == (0o755 if data is None else 0o644)
        assert member.isdir() if data is None else member.isfile()


def test_long_and_non_ascii_names_survive() -> None:
    long_name = "a-rather-long-directory-name/" * 12 + "page.html"
    names = [("index.html", b"x"), (long_name, b"long"), ("café/ünïcødé.html", b"utf8")]
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        _, canonical = ingest(make_tar(names, fmt=fmt))
        assert [(member.name, data) for member, data in unpack(canonical)] == names


def test_custom_entrypoint_and_leading_dot_slash() -> None:
    result, _ = ingest(make_tar([("./app/main.html", b"x")]), entrypoint="./app/main.html")
    assert result.manifest.entrypoint == "app/main.html"


def test_multi_frame_zstd_is_accepted() -> None:
    tar = make_tar(SITE)
    half = len(tar) // 2
    result, _ = ingest(zst(tar[:half]) + zst(tar[half:]))
    assert result.manifest.files == len(SITE_FILES)


def test_multi_member_gzip_with_zero_padding_is_accepted() -> None:
    tar = make_tar(SITE)
    half = len(tar) // 2
    result, _ = ingest(gz(tar[:half]) + gz(tar[half:]) + bytes(512))
    assert result.manifest.files == len(SITE_FILES)


def test_bytes_after_the_tar_end_are_covered_by_the_checksum() -> None:
    tar = make_tar(SITE)
    padded = tar + b"trailing bytes after the end-of-archive marker"
    assert ingest(padded)[0].source_bytes == len(padded)
    assert rejection(padded, expected=sha(tar)) == "ChecksumMismatch"


def test_progress_is_logged() -> None:
    lines: list[str] = []
    ingest(zst(make_tar(SITE)), log=lines.append)
    text = "\n".join(lines)
    assert "bundle format: tar.zst" in text
    assert "checked 7 members: 5 files" in text
    assert "canonical release: tar.zst" in text


# --------------------------------------------------------------------------- hostile / broken bundles

PAGE = raw_member(b"index.html", b"<h1>hi</h1>")
SPARSE_RECORDS = pax_record("GNU.sparse.size", b"4") + pax_record("GNU.sparse.numblocks", b"0")
LARGE_ZST = zst(make_tar([("index.html", random.Random(7).randbytes(3 << 20))]))
HOSTILE: dict[str, tuple[bytes, str]] = {
    "symlink": (special_tar(tarfile.SYMTYPE, linkname="/etc/passwd"), "UnsafeMemberType"),
    "hard link": (special_tar(tarfile.LNKTYPE, linkname="index.html"), "UnsafeMemberType"),
    "char device": (special_tar(tarfile.CHRTYPE), "UnsafeMemberType"),
    "block device": (special_tar(tarfile.BLKTYPE), "UnsafeMemberType"),
    "fifo": (special_tar(tarfile.FIFOTYPE), "UnsafeMemberType"),
    "contiguous file": (raw_tar(PAGE, raw_member(b"c.bin", b"data", kind=b"7")), "UnsafeMemberType"),
    "gnu sparse": (raw_tar(PAGE, raw_member(b"s.bin", b"", kind=b"S")), "UnsafeMemberType"),
    "pax sparse": (
        raw_tar(PAGE, raw_pax_member(SPARSE_RECORDS, b"s.bin", b"")),
        "UnsafeMemberType",
    ),
    "unknown type": (raw_tar(PAGE, raw_member(b"v", b"", kind=b"V")), "UnsafeMemberType"),
    "absolute path": (raw_tar(PAGE, raw_member(b"/etc/cron.d/evil", b"x")), "UnsafePath"),
    "dot-dot path": (raw_tar(PAGE, raw_member(b"../evil.html", b"x")), "UnsafePath"),
    "dot-dot inside path": (raw_tar(PAGE, raw_member(b"a/../../evil.html", b"x")), "UnsafePath"),
    "backslash path": (raw_tar(PAGE, raw_member(b"a\\..\\evil.html", b"x")), "UnsafePath"),
    "NUL in pax path": (raw_tar(PAGE, raw_pax_member(pax_record("path", b"a\x00b"), b"ab", b"x")), "UnsafePath"),
    "control character": (raw_tar(PAGE, raw_member(b"a\x1b[31m.html", b"x")), "UnsafePath"),
    "invalid utf-8": (raw_tar(PAGE, raw_member(b"caf\xe9.html", b"x")), "UnsafePath"),
    "path too long": (raw_tar(PAGE, raw_pax_member(pax_record("path", b"a/" * 600 + b"b"), b"x", b"x")), "UnsafePath"),
    "gnu long name too long": (
        raw_tar(PAGE, raw_member(b"././@LongLink", b"a" * 5000 + b"\x00", kind=b"L"), raw_member(b"x", b"x")),
        "UnsafePath",
    ),
    "file with directory name": (raw_tar(PAGE, raw_member(b"page/", b"x")), "UnsafePath"),
    "duplicate names": (raw_tar(PAGE, raw_member(b"index.html", b"other")), "DuplicateMember"),
    "duplicate a vs ./a": (raw_tar(PAGE, raw_member(b"a", b"1"), raw_member(b"./a", b"2")), "DuplicateMember"),
    "duplicate directory": (
        raw_tar(PAGE, raw_member(b"d/", kind=b"5"), raw_member(b"./d/", kind=b"5")),
        "DuplicateMember",
    ),
    "file used as directory": (raw_tar(PAGE, raw_member(b"a", b"1"), raw_member(b"a/b", b"2")), "DuplicateMember"),
    "directory then file": (raw_tar(PAGE, raw_member(b"a/b", b"1"), raw_member(b"a", b"2")), "DuplicateMember"),
    "not an archive": (b"<html>this is just a page</html>\n" * 40, "NotAnArchive"),
    "zip file": (b"PK\x03\x04" + bytes(600), "NotAnArchive"),
    "empty input": (b"", "NotAnArchive"),
    "gzip of a non-tar": (gz(b"just text, not a tar archive\n" * 100), "NotAnArchive"),
    "zstd of a non-tar": (zst(b"just text, not a tar archive\n" * 100), "NotAnArchive"),
    "missing entrypoint": (make_tar([("about.html", b"x")]), "MissingEntrypoint"),
    "entrypoint is a directory": (make_tar([("index.html", None), ("index.html/x", b"x")]), "MissingEntrypoint"),
    "empty archive": (bytes(10240), "EmptyBundle"),
    "only directories": (make_tar([("a", None), ("a/b", None)]), "EmptyBundle"),
    "garbled header mid-archive": (
        raw_tar(PAGE, raw_header(b"b.html", 1)[:148] + b"0000001\x00" + raw_header(b"b.html", 1)[156:] + bytes(512)),
        "CorruptBundle",
    ),
    "no end-of-archive marker": (raw_tar(PAGE, end=False), "CorruptBundle"),
    "zero-length pax record": (raw_tar(PAGE, raw_pax_member(b"0 path=x\n", b"b", b"x")), "CorruptBundle"),
    "garbled pax sparse map": (
        raw_tar(PAGE, raw_pax_member(pax_record("GNU.sparse.map", b"abc"), b"s.bin", b"")),
        "UnsafeMemberType",
    ),
    "endless pax header chain": (
        raw_tar(PAGE, *[raw_header(b"PaxHeader", 0, b"x")] * 40, raw_member(b"b", b"x")),
        "CorruptBundle",
    ),
    "directory with data": (raw_tar(PAGE, raw_header(b"d/", 512, b"5") + bytes(512)), "CorruptBundle"),
    "truncated tar": (make_tar(SITE)[:1700], "CorruptBundle"),
    "truncated inside file data": (
        raw_tar(PAGE, raw_header(b"big.bin", 5000) + bytes(1000), end=False),
        "CorruptBundle",
    ),
    "truncated tar.zst": (zst(make_tar(SITE))[:-40], "CorruptBundle"),
    "large tar.zst cut in half": (LARGE_ZST[: len(LARGE_ZST) // 2], "CorruptBundle"),
    "tar.zst missing its checksum": (zst(make_tar(SITE))[:-2], "CorruptBundle"),
    "truncated tar.gz": (gz(make_tar(SITE))[:-30], "CorruptBundle"),
    "garbage after tar.zst": (zst(make_tar(SITE)) + b"garbage", "CorruptBundle"),
    "garbage after tar.gz": (gz(make_tar(SITE)) + b"garbage", "CorruptBundle"),
    "garbled zstd": (zst(make_tar(SITE))[:20] + b"\xff" * 64 + zst(make_tar(SITE))[84:], "CorruptBundle"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_or_broken_bundle_is_rejected_with_exact_reason(case: str) -> None:
    bundle, reason = HOSTILE[case]
    assert rejection(bundle) == reason


def test_checksum_mismatch() -> None:
    bundle = zst(make_tar(SITE))
    assert rejection(bundle, expected=sha(b"something else")) == "ChecksumMismatch"


def test_malformed_expected_checksum() -> None:
    assert rejection(make_tar(SITE), expected="not-a-sha") == "ChecksumMismatch"


def test_expected_checksum_is_case_insensitive_with_optional_prefix() -> None:
    bundle = make_tar(SITE)
    assert ingest(bundle, expected="sha256:" + sha(bundle).upper())[0].manifest.files == len(SITE_FILES)


def test_member_problem_wins_over_checksum_mismatch() -> None:
    bundle = special_tar(tarfile.SYMTYPE, linkname="/etc/passwd")
    assert rejection(bundle, expected=sha(b"wrong")) == "UnsafeMemberType"


@pytest.mark.parametrize(
    "bundle",
    [zst(make_tar(SITE))[:-2], gz(make_tar(SITE)) + b"garbage"],
    ids=["zstd frame checksum cut off", "garbage after gzip"],
)
def test_checksum_wins_over_problems_found_after_the_tar_end(bundle: bytes) -> None:
    assert rejection(bundle) == "CorruptBundle"
    assert rejection(bundle, expected=sha(b"wrong")) == "ChecksumMismatch"


def test_unsafe_entrypoint_argument() -> None:
    assert rejection(make_tar(SITE), entrypoint="../secret") == "UnsafePath"


def test_too_many_members() -> None:
    bundle = make_tar([("index.html", b"x")] + [(f"f{i}", b"x") for i in range(10)])
    assert rejection(bundle, limits=IngestLimits(max_members=10)) == "TooManyMembers"
    assert ingest(bundle, limits=IngestLimits(max_members=11))[0].manifest.files == 11


def test_file_too_large() -> None:
    bundle = make_tar([("index.html", b"x"), ("big.bin", bytes(5000))])
    assert rejection(bundle, limits=IngestLimits(max_file_bytes=4999)) == "FileTooLarge"


def test_total_uncompressed_too_large() -> None:
    bundle = make_tar([("index.html", b"x")] + [(f"f{i}", bytes(1000)) for i in range(10)])
    assert rejection(bundle, limits=IngestLimits(max_total_bytes=5000)) == "BundleTooLarge"


def test_raw_bundle_too_large() -> None:
    bundle = make_tar(SITE)
    assert rejection(bundle, limits=IngestLimits(max_bundle_bytes=len(bundle) - 1)) == "BundleTooLarge"
    assert ingest(bundle, limits=IngestLimits(max_bundle_bytes=len(bundle)))[0].source_bytes == len(bundle)


def zero_bomb_tar(size: int) -> bytes:
    return make_tar([("index.html", b"x"), ("zeros.bin", bytes(size))])


@pytest.mark.parametrize("compress", [zst, gz], ids=["zstd", "gzip"])
def test_compression_bomb_is_stopped(compress: Callable[[bytes], bytes]) -> None:
    bomb = compress(zero_bomb_tar(50 << 20))
    assert len(bomb) < (50 << 20) / 200
    out = io.BytesIO()
    with pytest.raises(BundleRejected) as caught:
        ingest_bundle(io.BytesIO(bomb), out, expected_sha256=sha(bomb))
    assert caught.value.reason == "CompressionRatioExceeded"
    # It stopped early: far less than the 50 MiB of zeros went through the pipeline.
    expanded = re.search(r"expanded to more than ([\d.]+) MiB", caught.value.message)
    assert expanded is not None and float(expanded.group(1)) < 20


def test_compression_ratio_is_configurable() -> None:
    bundle = zst(zero_bomb_tar(4 << 20))
    assert rejection(bundle, limits=IngestLimits(max_compression_ratio=50)) == "CompressionRatioExceeded"
    assert ingest(bundle, limits=IngestLimits(max_compression_ratio=1e6))[0].manifest.files == 2


def test_small_very_compressible_bundles_are_fine() -> None:
    # Under 1 MiB decompressed the ratio is not enforced (a few HTML files compress a lot).
    bundle = zst(make_tar([("index.html", bytes(500_000))]))
    assert ingest(bundle)[0].manifest.total_bytes == 500_000


class FailingSource(io.RawIOBase):
    """Serves ``good`` bytes of a bundle, then fails like a dropped connection."""

    def __init__(self, data: bytes, good: int, error: Exception) -> None:
        super().__init__()
        self._data, self._good, self._error, self._pos = data, good, error, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._pos >= self._good:
            raise self._error
        chunk = self._data[self._pos : min(self._good, self._pos + len(buffer))]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("fmt", list(COMPRESSIONS))
@pytest.mark.parametrize("error", [TimeoutError("network went away"), ValueError("odd source")], ids=repr)
@pytest.mark.parametrize("good", [0, 700_000], ids=["at once", "mid-stream"])
def test_source_errors_propagate_unchanged(fmt: str, error: Exception, good: int) -> None:
    bundle = COMPRESSIONS[fmt](make_tar([("index.html", random.Random(1).randbytes(3 << 20))]))
    source = io.BufferedReader(FailingSource(bundle, good, error), buffer_size=4096)
    with pytest.raises(type(error)) as caught:
        ingest_bundle(source, io.BytesIO(), expected_sha256=sha(bundle))
    assert caught.value is error


def test_output_errors_propagate_unchanged() -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    bundle = zst(make_tar([("index.html", random.Random(2).randbytes(2 << 20))]))
    with pytest.raises(OSError, match="No space left"):
        ingest_bundle(io.BytesIO(bundle), FullDisk(), expected_sha256=sha(bundle))


# --------------------------------------------------------------------------- limits


def test_parse_size() -> None:
    assert parse_size("512Mi") == 512 << 20
    assert parse_size(" 10 ") == 10
    with pytest.raises(ValueError, match="not a byte size"):
        parse_size("1.5Gi")


# --------------------------------------------------------------------------- build log


def test_build_log_format_with_fixed_clock() -> None:
    moments = iter(
        [
            datetime(2026, 5, 14, 18, 19, 48, 123456, tzinfo=UTC),
            datetime(2026, 5, 14, 20, 19, 49, 5000, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 5, 14, 18, 19, 50),  # naive: taken as UTC
        ]
    )
    log = BuildLog(clock=lambda: next(moments))
    log.line("bundle format: tar.zst")
    log.line("two\nlines")
    log.line("escape \x1b[31m red")
    assert log.render() == (
        b"2026-05-14T18:19:48.123Z  bundle format: tar.zst\n"
        b"2026-05-14T18:19:49.005Z  two\n"
        b"2026-05-14T18:19:49.005Z  lines\n"
        b"2026-05-14T18:19:50.000Z  escape \\x1b[31m red\n"
    )
    assert len(log.lines) == 4


def test_build_log_collects_ingestion_progress() -> None:
    log = BuildLog(clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    ingest(make_tar(SITE), log=log.line)
    text = log.render().decode()
    assert text.endswith("\n")
    assert all(line.startswith("2026-01-01T00:00:00.000Z  ") for line in text.splitlines())
    assert "bundle format: tar" in text
