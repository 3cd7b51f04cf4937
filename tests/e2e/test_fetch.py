"""The static pods' init container and server, run as real processes against the real S3 server.

Releases are canonical artifacts made by ``ingest_bundle`` and uploaded to the releases
bucket, where the operator keeps them; ``miosa-operator fetch`` reads them with nothing but
the environment a pod gets (``MIOSA_S3_*``).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from miosa_operator.ingest import ingest_bundle

from .conftest import RELEASES_BUCKET, Environment

SITE = {
    "index.html": b"<!doctype html><h1>hello from s3</h1>\n",
    "css/site.css": b"body { margin: 0 }\n",
    "img/logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    "docs/guide/index.html": b"<h1>guide</h1>",
}


def canonical_release(files: dict[str, bytes]) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    bundle = buffer.getvalue()
    out = io.BytesIO()
    result = ingest_bundle(io.BytesIO(bundle), out, expected_sha256=hashlib.sha256(bundle).hexdigest())
    return out.getvalue(), result.canonical_sha256


def put_release(env: Environment, key: str, data: bytes) -> str:
    env.s3().put_object(Bucket=RELEASES_BUCKET, Key=key, Body=data)
    return f"s3://{RELEASES_BUCKET}/{key}"


def cli(env: Environment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "miosa_operator", *args],
        env={**os.environ, **env.values},
        capture_output=True,
        text=True,
        timeout=120,
    )


def fetch(env: Environment, uri: str, sha: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return cli(env, "fetch", "--uri", uri, "--sha256", sha, "--dest", str(dest))


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_fetch_unpacks_a_release_from_s3_and_serve_serves_it(env: Environment, s3_prefix: str, tmp_path: Path) -> None:
    data, sha = canonical_release(SITE)
    uri = put_release(env, f"{s3_prefix}dep_test/ver_good/dist.tar.zst", data)
    dest = tmp_path / "srv" / "site"

    fetched = fetch(env, uri, sha, dest)

    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.count("\n") == 1 and f"{len(SITE)} files" in fetched.stdout and sha in fetched.stdout
    assert files_under(dest) == SITE
    assert sorted(p.name for p in dest.parent.iterdir()) == ["site"]  # no staging directory left behind

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "miosa_operator", "serve", "--dir", str(dest), "--port", str(port), "--host", "127.0.0.1"],
        env={**os.environ, **env.values},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n")
        assert wait_http(f"http://127.0.0.1:{port}/") == (200, SITE["index.html"])
        assert wait_http(f"http://127.0.0.1:{port}/docs/guide/") == (200, SITE["docs/guide/index.html"])
        assert wait_http(f"http://127.0.0.1:{port}/%2e%2e/%2e%2e/etc/passwd")[0] == 404
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0


def test_fetch_refuses_a_tampered_release_and_leaves_dest_empty(env: Environment, s3_prefix: str, tmp_path: Path) -> None:
    data, sha = canonical_release(SITE)
    middle = len(data) // 2
    tampered = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
    uri = put_release(env, f"{s3_prefix}dep_test/ver_tampered/dist.tar.zst", tampered)
    dest = tmp_path / "srv" / "site"
    dest.mkdir(parents=True)

    fetched = fetch(env, uri, sha, dest)

    assert fetched.returncode == 3, (fetched.stdout, fetched.stderr)
    assert fetched.stderr.startswith("refused: ChecksumMismatch: "), fetched.stderr
    assert list(dest.iterdir()) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["site"]


def test_fetch_of_a_missing_release_is_a_store_error(env: Environment, s3_prefix: str, tmp_path: Path) -> None:
    uri = f"s3://{RELEASES_BUCKET}/{s3_prefix}dep_test/ver_missing/dist.tar.zst"
    fetched = fetch(env, uri, "0" * 64, tmp_path / "site")
    assert fetched.returncode == 4, (fetched.stdout, fetched.stderr)
    assert fetched.stderr.startswith("store error: "), fetched.stderr
    assert not (tmp_path / "site").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, timeout: float = 15) -> tuple[int, bytes]:
    """(status, body) of the first answer; retries only while the server is not listening yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
