"""``kubectl miosa publish`` packs directories reproducibly: same tree, same bytes."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from miosa_operator.ingest.bundle import ingest_bundle
from miosa_operator.plugin.pack import PackError, pack_directory


def site(root: Path, mtime: int) -> Path:
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<h1>hi</h1>")
    (root / "assets" / "app.js").write_text("console.log(1)")
    (root / "b.txt").write_text("b")
    for path in root.rglob("*"):
        os.utime(path, (mtime, mtime))
    return root


def packed(root: Path) -> bytes:
    out = io.BytesIO()
    pack_directory(root, out)
    return out.getvalue()


def test_same_tree_same_bytes_whatever_the_mtimes_and_creation_order(tmp_path: Path) -> None:
    first = packed(site(tmp_path / "one", 1_000_000))
    second = packed(site(tmp_path / "two", 1_900_000_000))
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_members_are_sorted_with_fixed_metadata(tmp_path: Path) -> None:
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed(site(tmp_path / "s", 5)))).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["assets", "assets/app.js", "b.txt", "index.html"]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}
    assert [i.mode for i in infos] == [0o755, 0o644, 0o644, 0o644]


def test_the_operator_accepts_the_bundle(tmp_path: Path) -> None:
    bundle = packed(site(tmp_path / "s", 5))
    result = ingest_bundle(io.BytesIO(bundle), io.BytesIO(), expected_sha256=hashlib.sha256(bundle).hexdigest())
    assert result.manifest.files == 3


def test_links_and_empty_directories_are_refused(tmp_path: Path) -> None:
    root = site(tmp_path / "s", 5)
    (root / "link").symlink_to(root / "index.html")
    with pytest.raises(PackError, match="link"):
        packed(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackError, match="no files"):
        packed(tmp_path / "empty")
