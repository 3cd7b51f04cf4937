"""Release fetching: verify, then unpack (the static pods' init container).

Releases are made with ``ingest_bundle``, so they are real canonical artifacts; hostile
releases (links, ``..`` paths) are built by hand, as only a tampered store could hold them.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from miosa_operator.cli import main
from miosa_operator.ingest import IngestLimits, ingest_bundle
from miosa_operator.serve.fetch import FetchRefused, fetch_release
from miosa_operator.store import ArtifactNotFound, FileStore

MTIME = 1_700_000_000
SITE: dict[str, bytes | None] = {  # None = directory
    "index.html": b"<!doctype html><h1>hello</h1>\n",
    "css/": None,
    "css/x.css": b"body { color: red }\n",
    "img/logo.svg": b"<svg/>",  # no directory entry: the fetcher must create "img" itself
    "empty.txt": b"",
}
FILES = {name: data for name, data in SITE.items() if data is not None}
LIMITS = IngestLimits()


# --------------------------------------------------------------------------- builders


def tar_of(members: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info in members:
            data = payloads.get(info.name)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.type, info.linkname = MTIME, kind, link
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def site_tar(site: dict[str, bytes | None] = SITE) -> bytes:
    members = [member(n.rstrip("/"), d, tarfile.DIRTYPE if d is None else tarfile.REGTYPE) for n, d in site.items()]
    return tar_of(members, {n: d for n, d in site.items() if d is not None})


def canonical_release(site: dict[str, bytes | None] = SITE) -> tuple[bytes, str]:
    bundle = site_tar(site)
    out = io.BytesIO()
    result = ingest_bundle(io.BytesIO(bundle), out, expected_sha256=hashlib.sha256(bundle).hexdigest())
    return out.getvalue(), result.canonical_sha256


def hostile_release(members: list[tarfile.TarInfo], payloads: dict[str, bytes]) -> tuple[bytes, str]:
    """A zstd tar that ingestion would never produce; its sha256 matches, so only member checks can stop it."""
    data = zstandard.ZstdCompressor().compress(tar_of(members, payloads))
    return data, hashlib.sha256(data).hexdigest()


def store_object(tmp_path: Path, data: bytes, name: str = "dist.tar.zst") -> str:
    path = tmp_path / "store" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"file://{path}"


def flip_byte(data: bytes, at: int | None = None) -> bytes:
    index = len(data) // 2 if at is None else at
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


def tree(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel + "/" if path.is_dir() else rel] = None if path.is_dir() else path.read_bytes()
    return found


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".fetch-" in p.name or ".old-" in p.name)


@pytest.fixture
def release(tmp_path: Path) -> tuple[str, str, bytes]:
    data, sha = canonical_release()
    return store_object(tmp_path, data), sha, data


# --------------------------------------------------------------------------- fetch


def test_fetch_unpacks_every_file_with_safe_modes(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, sha, _ = release
    dest = tmp_path / "srv" / "site"

    result = fetch_release(FileStore(), uri, sha, dest, LIMITS)

    assert result.files == len(FILES)
    assert result.total_bytes == sum(len(d) for d in FILES.values())
    assert result.sha256 == sha
    assert {k: v for k, v in tree(dest).items() if v is not None} == FILES
    assert set(tree(dest)) == set(FILES) | {"css/", "img/"}
    for path in [dest, *dest.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path
        assert not path.is_symlink()
    assert int((dest / "css" / "x.css").stat().st_mtime) == MTIME
    assert leftovers(dest.parent) == []


def test_fetch_ignores_the_umask(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, sha, _ = release
    old = os.umask(0o077)
    try:
        fetch_release(FileStore(), uri, sha, tmp_path / "site", LIMITS)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "site" / "css").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "site" / "index.html").stat().st_mode) == 0o644


def test_fetch_into_an_empty_directory_and_over_an_earlier_fetch(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, sha, _ = release
    dest = tmp_path / "site"
    dest.mkdir()
    fetch_release(FileStore(), uri, sha, dest, LIMITS)
    (dest / "stale.txt").write_text("from an earlier fetch")

    fetch_release(FileStore(), uri, sha, dest, LIMITS)

    assert {k: v for k, v in tree(dest).items() if v is not None} == FILES
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("at", [None, 0, 4, -6])  # middle, magic, frame header, frame checksum
def test_tampered_release_is_refused_and_dest_stays_absent(
    tmp_path: Path, release: tuple[str, str, bytes], at: int | None
) -> None:
    _, sha, data = release
    uri = store_object(tmp_path, flip_byte(data, at if at is None or at >= 0 else len(data) + at), "bad.tar.zst")
    dest = tmp_path / "site"

    with pytest.raises(FetchRefused) as refused:
        fetch_release(FileStore(), uri, sha, dest, LIMITS)

    assert refused.value.reason == "ChecksumMismatch"
    assert sha in refused.value.message
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_tampered_release_leaves_an_empty_dest_empty(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    _, sha, data = release
    uri = store_object(tmp_path, flip_byte(data), "bad.tar.zst")
    dest = tmp_path / "site"
    dest.mkdir()
    with pytest.raises(FetchRefused, match="ChecksumMismatch"):
        fetch_release(FileStore(), uri, sha, dest, LIMITS)
    assert list(dest.iterdir()) == []


def test_intact_release_with_the_wrong_expected_hash_is_refused(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, _, _ = release
    with pytest.raises(FetchRefused) as refused:
        fetch_release(FileStore(), uri, "0" * 64, tmp_path / "site", LIMITS)
    assert refused.value.reason == "ChecksumMismatch"
    assert not (tmp_path / "site").exists()


def test_truncated_release_is_a_checksum_mismatch(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    _, sha, data = release
    uri = store_object(tmp_path, data[: len(data) // 2], "cut.tar.zst")
    with pytest.raises(FetchRefused, match=r"^ChecksumMismatch: .*also fails to unpack"):
        fetch_release(FileStore(), uri, sha, tmp_path / "site", LIMITS)


HOSTILE = {
    "symlink": ([member("link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "UnsafeMemberType"),
    "symlink-dir": ([member("up", kind=tarfile.SYMTYPE, link=".."), member("up/evil.txt", b"x")], "UnsafeMemberType"),
    "hardlink": ([member("hard", kind=tarfile.LNKTYPE, link="index.html")], "UnsafeMemberType"),
    "fifo": ([member("pipe", kind=tarfile.FIFOTYPE)], "UnsafeMemberType"),
    "dotdot": ([member("../evil.txt", b"x")], "UnsafePath"),
    "nested-dotdot": ([member("css/../../evil.txt", b"x")], "UnsafePath"),
    "absolute": ([member("/tmp/evil.txt", b"x")], "UnsafePath"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_release_with_unsafe_members_is_refused(tmp_path: Path, case: str) -> None:
    bad_members, reason = HOSTILE[case]
    first = member("index.html", b"<h1>hi</h1>")  # an innocent member before the bad one
    payloads = {m.name: b"x" for m in bad_members if m.type == tarfile.REGTYPE} | {"index.html": b"<h1>hi</h1>"}
    data, sha = hostile_release([first, *bad_members], payloads)
    uri = store_object(tmp_path, data, f"{case}.tar.zst")
    work = tmp_path / "work"
    dest = work / "site"

    with pytest.raises(FetchRefused) as refused:
        fetch_release(FileStore(), uri, sha, dest, LIMITS)

    assert refused.value.reason == reason
    assert not dest.exists()
    assert list(work.iterdir()) == []  # the staged index.html went with the staging directory
    assert not (tmp_path / "evil.txt").exists() and not (work / "evil.txt").exists()


def test_only_canonical_tar_zst_releases_are_accepted(tmp_path: Path) -> None:
    plain = site_tar()
    uri = store_object(tmp_path, plain, "dist.tar")
    with pytest.raises(FetchRefused) as refused:
        fetch_release(FileStore(), uri, hashlib.sha256(plain).hexdigest(), tmp_path / "site", LIMITS)
    assert refused.value.reason == "NotAnArchive"


def test_release_over_the_limits_is_refused(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, sha, _ = release
    with pytest.raises(FetchRefused) as refused:
        fetch_release(FileStore(), uri, sha, tmp_path / "site", IngestLimits(max_members=2))
    assert refused.value.reason == "TooManyMembers"


def test_missing_object_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound):
        fetch_release(FileStore(), f"file://{tmp_path}/nope.tar.zst", "a" * 64, tmp_path / "site", LIMITS)


def test_symlinked_dest_is_not_followed(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, sha, _ = release
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "site").symlink_to(target)
    with pytest.raises(NotADirectoryError):
        fetch_release(FileStore(), uri, sha, tmp_path / "site", LIMITS)
    assert list(target.iterdir()) == []


def test_malformed_expected_hash(tmp_path: Path, release: tuple[str, str, bytes]) -> None:
    uri, _, _ = release
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch_release(FileStore(), uri, "abc", tmp_path / "site", LIMITS)


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code or 0)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIOSA_FILE_ROOT", raising=False)
    for name in list(os.environ):
        if name.startswith("MIOSA_MAX_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_cli_fetch_exit_codes(tmp_path: Path, release: tuple[str, str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    uri, sha, data = release
    dest = tmp_path / "site"

    assert run_cli("fetch", "--uri", uri, "--sha256", sha, "--dest", str(dest)) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"{len(FILES)} files" in out and sha in out
    assert (dest / "index.html").read_bytes() == FILES["index.html"]

    bad = store_object(tmp_path, flip_byte(data), "bad.tar.zst")
    assert run_cli("fetch", "--uri", bad, "--sha256", sha, "--dest", str(tmp_path / "bad")) == 3
    assert capsys.readouterr().err.startswith("refused: ChecksumMismatch: ")
    assert not (tmp_path / "bad").exists()

    missing = f"file://{tmp_path}/missing.tar.zst"
    assert run_cli("fetch", "--uri", missing, "--sha256", sha, "--dest", str(tmp_path / "m")) == 4
    assert "store error" in capsys.readouterr().err

    assert run_cli("fetch", "--uri", uri, "--sha256", "xyz", "--dest", str(tmp_path / "x")) == 2
    assert "64 hex digits" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_cli_fetch_honours_the_file_root(
    tmp_path: Path, release: tuple[str, str, bytes], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, sha, _ = release
    (tmp_path / "jail").mkdir()
    monkeypatch.setenv("MIOSA_FILE_ROOT", str(tmp_path / "jail"))
    assert run_cli("fetch", "--uri", uri, "--sha256", sha, "--dest", str(tmp_path / "site")) == 4
    assert "outside the store root" in capsys.readouterr().err


# --------------------------------------------------------------------------- what ingestion accepts, fetch serves


def test_the_most_compressible_bundle_ingestion_accepts_is_fetched(tmp_path: Path) -> None:
    """A plain tar holding one file of zeros as large as the limits allow: no ratio to check on
    the way in, a tiny release on the way out.  The ratio cap is for uploads, not releases."""
    limits = IngestLimits(max_file_bytes=16 << 20, max_total_bytes=(16 << 20) + 1024)
    zeros = bytes(limits.max_file_bytes)
    bundle = tar_of(
        [member("index.html", b"<h1>z</h1>"), member("zeros.bin", zeros)], {"index.html": b"<h1>z</h1>", "zeros.bin": zeros}
    )
    out = io.BytesIO()
    ingested = ingest_bundle(io.BytesIO(bundle), out, expected_sha256=hashlib.sha256(bundle).hexdigest(), limits=limits)
    release = out.getvalue()
    assert len(zeros) / len(release) > limits.max_compression_ratio * 10  # far beyond the upload cap

    result = fetch_release(FileStore(), store_object(tmp_path, release), ingested.canonical_sha256, tmp_path / "site", limits)

    assert result.files == 2 and (tmp_path / "site" / "zeros.bin").stat().st_size == len(zeros)


def test_release_size_caps_still_apply_without_the_ratio_cap(tmp_path: Path) -> None:
    zeros = bytes(4 << 20)
    data, sha = hostile_release(
        [member("index.html", b"x"), member("zeros.bin", zeros)], {"index.html": b"x", "zeros.bin": zeros}
    )
    with pytest.raises(FetchRefused) as refused:
        fetch_release(FileStore(), store_object(tmp_path, data), sha, tmp_path / "site", IngestLimits(max_file_bytes=1 << 20))
    assert refused.value.reason == "FileTooLarge"
    assert not (tmp_path / "site").exists()


@pytest.mark.usefixtures("clean_env")
def test_cli_fetch_checks_with_the_limits_in_its_environment(
    tmp_path: Path, release: tuple[str, str, bytes], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rendered pod passes the operator's limits as MIOSA_MAX_*: fetch must use them."""
    uri, sha, _ = release
    monkeypatch.setenv("MIOSA_MAX_MEMBERS", "2")
    assert run_cli("fetch", "--uri", uri, "--sha256", sha, "--dest", str(tmp_path / "site")) == 3
    assert capsys.readouterr().err.startswith("refused: TooManyMembers: ")
    monkeypatch.setenv("MIOSA_MAX_MEMBERS", "20000")  # above the default: allowed because configured
    monkeypatch.setenv("MIOSA_MAX_COMPRESSION_RATIO", "1")  # ignored for releases
    assert run_cli("fetch", "--uri", uri, "--sha256", sha, "--dest", str(tmp_path / "site")) == 0
