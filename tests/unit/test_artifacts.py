"""The artifact endpoint, its token reviewer and the fetch client, over real loopback HTTP.

The API server's TokenReview is replaced by a table of tokens (the e2e suite uses the real
one); the store is a real ``FileStore`` holding real releases.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from miosa_operator.ingest import ingest_bundle
from miosa_operator.kube.tokenreview import ReviewUnavailable, TokenReviewer, bearer_token
from miosa_operator.serve.artifacts import ArtifactEndpoint, EndpointLimits
from miosa_operator.serve.client import EndpointSource, ReleaseUnavailable, ReleaseUnreadable, fetch_with_retries
from miosa_operator.serve.fetch import fetch_release
from miosa_operator.serve.releases import parse_release_path, release_path
from miosa_operator.settings import Settings
from miosa_operator.store import FileStore

AUDIENCE = "miosa-artifacts"
DEP, VER, VER2 = "dep_" + "0" * 26, "ver_" + "1" * 26, "ver_" + "2" * 26


def account(namespace: str, name: str = "default", audiences: tuple[str, ...] = (AUDIENCE,)) -> dict[str, Any]:
    return {
        "authenticated": True,
        "audiences": list(audiences),
        "user": {"username": f"system:serviceaccount:{namespace}:{name}", "uid": "u-1", "groups": ["system:serviceaccounts"]},
    }


class FakeApiServer:
    """What TokenReview would say about each token, and how often it was asked."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {
            "tok-a": account("tenant-a"),
            "tok-b": account("tenant-b"),
            "tok-api-audience": account("tenant-a", audiences=()),  # an audience-agnostic authenticator
            "tok-user": {"authenticated": True, "audiences": [AUDIENCE], "user": {"username": "alice"}},
        }
        self.calls = 0
        self.down = False

    def review(self, token: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise ReviewUnavailable("connection refused")
        status = self.tokens.get(token)
        if status is None or (status["audiences"] and not set(audiences) & set(status["audiences"])):
            return {"authenticated": False, "error": "invalid bearer token"}
        return status


def release_bytes(marker: bytes) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("index.html")
        info.size = len(marker)
        archive.addfile(info, io.BytesIO(marker))
    bundle = buffer.getvalue()
    out = io.BytesIO()
    result = ingest_bundle(io.BytesIO(bundle), out, expected_sha256=hashlib.sha256(bundle).hexdigest())
    return out.getvalue(), result.canonical_sha256


@pytest.fixture
def releases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Two tenants' releases in a file store: ``{namespace: (release, sha256)}``."""
    made = {}
    for namespace in ("tenant-a", "tenant-b"):
        data, sha = release_bytes(f"<h1>{namespace}</h1>".encode())
        path = tmp_path / "releases" / namespace / DEP / VER / "dist.tar.zst"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        (path.parent / "build.log").write_text("log")
        made[namespace] = (f"{namespace}/{DEP}/{VER}", sha)
    return made


@pytest.fixture
def apiserver() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def endpoint(tmp_path: Path, releases: dict[str, tuple[str, str]], apiserver: FakeApiServer) -> Iterator[ArtifactEndpoint]:
    running = ArtifactEndpoint(
        FileStore(tmp_path),
        f"file://{tmp_path}/releases",
        TokenReviewer(apiserver.review, AUDIENCE),
        host="127.0.0.1",
        port=0,
        limits=EndpointLimits(max_streams=4, max_streams_per_tenant=1),
    )
    running.start()
    yield running
    running.stop()


def call(endpoint: ArtifactEndpoint, path: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{endpoint.port}{path}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def test_a_tenant_token_downloads_its_own_release(
    endpoint: ArtifactEndpoint, tmp_path: Path, releases: dict[str, tuple[str, str]]
) -> None:
    status, data, headers = call(endpoint, release_path("tenant-a", DEP, VER), "tok-a")
    assert status == 200
    assert data == (tmp_path / "releases" / "tenant-a" / DEP / VER / "dist.tar.zst").read_bytes()
    assert headers["Content-Length"] == str(len(data)) and headers["Cache-Control"] == "no-store"
    assert hashlib.sha256(data).hexdigest() == releases["tenant-a"][1]


def test_another_tenants_release_looks_exactly_like_a_missing_one(endpoint: ArtifactEndpoint) -> None:
    foreign = call(endpoint, release_path("tenant-b", DEP, VER), "tok-a")
    missing = call(endpoint, release_path("tenant-a", DEP, VER2), "tok-a")
    nowhere = call(endpoint, release_path("tenant-c", DEP, VER), "tok-a")
    assert foreign[:2] == missing[:2] == nowhere[:2] == (404, b"no such release\n")
    assert dict(foreign[2]).keys() == dict(missing[2]).keys()


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/releases/tenant-a/{DEP}/{VER}/build.log",
        f"/v1/releases/tenant-a/{DEP}/{VER}/../../..",
        f"/v1/releases/tenant-a/{DEP}/..%2f{VER}",
        f"/v1/releases/tenant-a/{DEP}",
        "/v1/releases/tenant-a/",
        f"/v1/releases/Tenant-A/{DEP}/{VER}",
        f"/v1/releases/tenant-a/dep_x/{VER}",
        f"/tenant-a/{DEP}/{VER}/dist.tar.zst",
        "/",
    ],
)
def test_nothing_but_a_release_can_be_named(endpoint: ArtifactEndpoint, path: str) -> None:
    assert call(endpoint, path, "tok-a")[:2] == (404, b"no such release\n")


@pytest.mark.parametrize("token", [None, "tok-unknown", "tok-api-audience", "tok-user", "x" * 8100])
def test_tokens_not_for_this_audience_or_not_a_service_account_are_refused(endpoint: ArtifactEndpoint, token: str | None) -> None:
    status, data, headers = call(endpoint, release_path("tenant-a", DEP, VER), token)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert b"tenant-a" not in data


def test_only_get_and_head(endpoint: ArtifactEndpoint) -> None:
    assert call(endpoint, release_path("tenant-a", DEP, VER), "tok-a", method="PUT")[0] == 405
    assert call(endpoint, release_path("tenant-a", DEP, VER), "tok-a", method="DELETE")[0] == 405
    status, data, headers = call(endpoint, release_path("tenant-a", DEP, VER), "tok-a", method="HEAD")
    assert status == 200 and data == b"" and int(headers["Content-Length"]) > 0


def test_api_server_trouble_is_a_retry_not_a_refusal(endpoint: ArtifactEndpoint, apiserver: FakeApiServer) -> None:
    apiserver.down = True
    status, _, headers = call(endpoint, release_path("tenant-a", DEP, VER), "tok-a")
    assert status == 503 and headers["Retry-After"]


def test_one_tenant_cannot_take_every_download_slot(endpoint: ArtifactEndpoint, tmp_path: Path) -> None:
    """A download in progress holds tenant-a's only slot; tenant-a waits, tenant-b does not."""
    big = tmp_path / "releases" / "tenant-a" / DEP / VER2 / "dist.tar.zst"
    big.parent.mkdir(parents=True)
    big.write_bytes(bytes(64 << 20))
    request = urllib.request.Request(
        f"http://127.0.0.1:{endpoint.port}{release_path('tenant-a', DEP, VER2)}", headers={"Authorization": "Bearer tok-a"}
    )
    with urllib.request.urlopen(request, timeout=10) as slow:
        slow.read(1024)  # and then stop reading: the stream stays open, the slot taken
        assert call(endpoint, release_path("tenant-a", DEP, VER), "tok-a")[0] == 429
        assert call(endpoint, release_path("tenant-b", DEP, VER), "tok-b")[0] == 200
    deadline = time.monotonic() + 30  # the endpoint notices the closed connection and frees the slot (slow when loaded)
    status = call(endpoint, release_path("tenant-a", DEP, VER), "tok-a")[0]
    while status == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = call(endpoint, release_path("tenant-a", DEP, VER), "tok-a")[0]
    # (Asking once more right after a 200 could race that download's own slot release.)
    assert status == 200


def test_token_reviews_are_cached_by_digest(apiserver: FakeApiServer) -> None:
    now = [0.0]
    reviewer = TokenReviewer(apiserver.review, AUDIENCE, ttl=30, refusal_ttl=5, clock=lambda: now[0])
    assert reviewer.authenticate("tok-a").service_account == ("tenant-a", "default")  # type: ignore[union-attr]
    assert reviewer.authenticate("tok-a") is not None and apiserver.calls == 1
    assert reviewer.authenticate("bad") is None and reviewer.authenticate("bad") is None and apiserver.calls == 2
    now[0] = 31
    reviewer.authenticate("tok-a")
    assert apiserver.calls == 3
    assert "tok-a" not in repr(reviewer._cache)  # digests, never tokens


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer ") is None and bearer_token(None) is None


def test_release_paths_round_trip() -> None:
    assert parse_release_path(release_path("ns", DEP, VER)) == ("ns", DEP, VER)
    assert parse_release_path(f"/v1/releases/ns/{DEP}/{VER}/") is None


# --------------------------------------------------------------------------- the fetch client


def test_fetch_through_the_endpoint_with_a_token_file(
    endpoint: ArtifactEndpoint, tmp_path: Path, releases: dict[str, tuple[str, str]]
) -> None:
    token = tmp_path / "token"
    token.write_text("tok-a\n")
    source = EndpointSource(f"http://127.0.0.1:{endpoint.port}", token)
    release, sha = releases["tenant-a"]
    result = fetch_release(source, release, sha, tmp_path / "site", Settings.defaults().limits)
    assert result.files == 1 and (tmp_path / "site" / "index.html").read_bytes() == b"<h1>tenant-a</h1>"

    other, other_sha = releases["tenant-b"]
    with pytest.raises(ReleaseUnreadable, match="404"):
        fetch_release(source, other, other_sha, tmp_path / "other", Settings.defaults().limits)
    assert not (tmp_path / "other").exists()


def test_client_errors_are_classified(endpoint: ArtifactEndpoint, apiserver: FakeApiServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-unknown")
    release = f"tenant-a/{DEP}/{VER}"
    with pytest.raises(ReleaseUnreadable, match="401"):
        EndpointSource(f"http://127.0.0.1:{endpoint.port}", token).open_read(release)
    with pytest.raises(ReleaseUnreadable, match="token"):
        EndpointSource(f"http://127.0.0.1:{endpoint.port}", tmp_path / "absent").open_read(release)
    apiserver.down = True
    token.write_text("tok-a")
    with pytest.raises(ReleaseUnavailable, match="503"):
        EndpointSource(f"http://127.0.0.1:{endpoint.port}", token).open_read(release)
    with pytest.raises(ReleaseUnavailable):
        EndpointSource("http://127.0.0.1:9", token).open_read(release)  # nothing listens on the discard port
    with pytest.raises(ValueError, match="must be http"):
        EndpointSource("ftp://x", token)
    with pytest.raises(ValueError, match="a release is"):
        EndpointSource(f"http://127.0.0.1:{endpoint.port}", token).open_read("tenant-a/../x")


def test_retries_until_the_endpoint_answers_or_the_deadline() -> None:
    now, slept, outcomes = [0.0], [], [ReleaseUnavailable("down"), ReleaseUnavailable("down"), "done"]

    def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    assert fetch_with_retries(attempt, 60, sleep=sleep, clock=lambda: now[0]) == "done" and slept == [0.5, 1.0]
    outcomes[:] = [ReleaseUnavailable("down")] * 20
    with pytest.raises(ReleaseUnavailable):
        fetch_with_retries(attempt, 10, sleep=sleep, clock=lambda: now[0])
    outcomes[:] = [ReleaseUnreadable("refused")]
    with pytest.raises(ReleaseUnreadable):
        fetch_with_retries(attempt, 10, sleep=sleep, clock=lambda: now[0])


def test_a_download_cut_short_is_retryable(tmp_path: Path) -> None:
    """A server that promises more bytes than it sends: never a ChecksumMismatch, a retry."""
    import http.server

    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x28\xb5\x2f\xfd" + bytes(100))
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("t")
    try:
        source = EndpointSource(f"http://127.0.0.1:{httpd.server_address[1]}", token)
        with pytest.raises(ReleaseUnavailable):
            fetch_release(source, f"ns/{DEP}/{VER}", "a" * 64, tmp_path / "site", Settings.defaults().limits)
        assert not (tmp_path / "site").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_pods_get_the_operators_limits_and_the_endpoint_url() -> None:
    settings = Settings.defaults(max_members=20000, max_file_bytes=1 << 30, artifacts_addr="0.0.0.0", artifacts_port=9000)
    passed = settings.limits_environment()
    assert Settings.from_env(passed).limits == settings.limits  # what fetch reads is what ingestion used
    assert set(passed) == {name for name in passed if name.startswith("MIOSA_MAX_")}
    assert settings.artifacts_pod_url == "http://127.0.0.1:9000"
    assert Settings.defaults(artifacts_url="http://ep.ns.svc:8081/").artifacts_pod_url == "http://ep.ns.svc:8081"
