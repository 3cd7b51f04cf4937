"""Artifact stores: the same write-once contract on the local filesystem (for real, on
tmp_path) and on S3 (moto's in-process S3), plus URI helpers and the router."""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import botocore.utils
import pytest
from botocore.exceptions import ClientError, NoCredentialsError, ReadTimeoutError
from moto import mock_aws

from miosa_operator.settings import Settings
from miosa_operator.store import (
    ArtifactNotFound,
    ArtifactStore,
    FileStore,
    ObjectInfo,
    S3Config,
    S3Store,
    StoreAccessDenied,
    StoreError,
    StoreRouter,
    TransientStoreError,
    join_uri,
    parse_uri,
)
from miosa_operator.store.filestore import _os_error
from miosa_operator.store.s3store import _BodyReader, classify_error, parse_timestamp

BUCKET = "miosa-test"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "MIOSA_S3_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def s3(s3_env: None) -> Iterator[S3Store]:
    with mock_aws():
        store = S3Store(S3Config(region="us-east-1", access_key_id="testing", secret_access_key="testing"))
        store._client.create_bucket(Bucket=BUCKET)
        # S3 decides a conditional PUT atomically; moto checks and stores in two steps, so
        # its requests are serialised here (the real server's race: tests/e2e/test_store_s3.py).
        lock, put = threading.Lock(), store._client.put_object

        def atomic_put(**kwargs: object) -> object:
            with lock:
                return put(**kwargs)

        store._client.put_object = atomic_put
        yield store


@pytest.fixture
def files() -> FileStore:
    return FileStore()


@pytest.fixture(params=["file", "s3"])
def store_and_base(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ArtifactStore, str]:
    """The same contract tests run against both backends."""
    if request.param == "file":
        return FileStore(root=tmp_path), f"file://{tmp_path}"
    return request.getfixturevalue("s3"), f"s3://{BUCKET}"


# --------------------------------------------------------------------------- shared contract


def test_put_then_read_back(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    uri = join_uri(base, "dep", "ver", "dist.tar.zst")
    payload = os.urandom(3 << 20)  # several read chunks
    assert store.put_if_absent(uri, io.BytesIO(payload), size=len(payload)) is True
    with store.open_read(uri) as reader:
        assert reader.read() == payload
    assert store.head(uri) == ObjectInfo(uri=uri, size=len(payload))


def test_never_overwrites(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    uri = join_uri(base, "release")
    assert store.put_bytes_if_absent(uri, b"original") is True
    assert store.put_bytes_if_absent(uri, b"replacement") is False
    assert store.put_if_absent(uri, io.BytesIO(b"replacement again")) is False
    with store.open_read(uri) as reader:
        assert reader.read() == b"original"


def test_missing_objects(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    uri = join_uri(base, "nothing", "here")
    assert store.head(uri) is None
    assert store.delete(uri) is False
    with pytest.raises(ArtifactNotFound):
        store.open_read(uri)


def test_delete(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    uri = join_uri(base, "a", "log")
    store.put_bytes_if_absent(uri, b"log")
    assert store.delete(uri) is True
    assert store.head(uri) is None
    assert store.delete(uri) is False
    assert store.put_bytes_if_absent(uri, b"again") is True  # the name is free again


def test_list_is_a_sorted_string_prefix_listing(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    names = ["dep/v1/dist.tar.zst", "dep/v1/build.log", "dep/v10/dist.tar.zst", "dep/v2/dist.tar.zst", "other/x"]
    for index, name in enumerate(names):
        store.put_bytes_if_absent(join_uri(base, name), b"x" * (index + 1))
    listed = list(store.list(join_uri(base, "dep", "v1")))
    assert listed == [
        ObjectInfo(join_uri(base, "dep/v1/build.log"), 2),
        ObjectInfo(join_uri(base, "dep/v1/dist.tar.zst"), 1),
        ObjectInfo(join_uri(base, "dep/v10/dist.tar.zst"), 3),
    ]
    assert [info.uri for info in store.list(join_uri(base, "dep", "v1") + "/")] == [
        join_uri(base, "dep/v1/build.log"),
        join_uri(base, "dep/v1/dist.tar.zst"),
    ]
    assert list(store.list(join_uri(base, "nope") + "/")) == []


def test_size_mismatch_stores_nothing(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    uri = join_uri(base, "short")
    with pytest.raises(StoreError):
        store.put_if_absent(uri, io.BytesIO(b"12345"), size=10)
    assert store.head(uri) is None


def test_non_seekable_source(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    read_end, write_end = os.pipe()
    os.write(write_end, b"streamed through a pipe")
    os.close(write_end)
    uri = join_uri(base, "piped")
    with open(read_end, "rb") as pipe:
        assert store.put_if_absent(uri, pipe) is True
    with store.open_read(uri) as reader:
        assert reader.read() == b"streamed through a pipe"


def race(put: Callable[[int], bool], writers: int = 12) -> list[bool]:
    barrier = threading.Barrier(writers)
    results: list[bool] = [False] * writers
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = put(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    return results


def test_concurrent_put_if_absent_has_exactly_one_winner(store_and_base: tuple[ArtifactStore, str]) -> None:
    store, base = store_and_base
    uri = join_uri(base, "contended", "dist.tar.zst")
    payloads = [bytes([index]) * (256 << 10) for index in range(12)]
    results = race(lambda index: store.put_if_absent(uri, io.BytesIO(payloads[index]), size=len(payloads[index])))
    assert results.count(True) == 1
    with store.open_read(uri) as reader:
        assert reader.read() == payloads[results.index(True)]  # whole, and the winner's


# --------------------------------------------------------------------------- FileStore specifics


def test_file_dot_dot_is_rejected(tmp_path: Path, files: FileStore) -> None:
    for uri in (f"file://{tmp_path}/../etc/passwd", f"file://{tmp_path}/a/../../b", "file:///.."):
        with pytest.raises(StoreError):
            files.put_bytes_if_absent(uri, b"x")
        with pytest.raises(StoreError):
            files.open_read(uri)


def test_file_root_confines_uris(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "escape").symlink_to(tmp_path)
    store = FileStore(root=root)
    with pytest.raises(StoreError, match="outside the store root"):
        store.open_read(f"file://{tmp_path}/secret")
    with pytest.raises(StoreError, match="outside the store root"):
        store.open_read(f"file://{root}/escape/secret")  # through a symlink
    assert store.put_bytes_if_absent(f"file://{root}/inside/x", b"ok") is True


def test_file_uri_forms_and_wrong_schemes(tmp_path: Path, files: FileStore) -> None:
    assert files.put_bytes_if_absent(f"file://localhost{tmp_path}/a", b"x") is True
    assert (tmp_path / "a").read_bytes() == b"x"
    for uri in ("file://relative/path", f"s3://{BUCKET}/key", str(tmp_path / "a")):
        with pytest.raises(StoreError):
            files.head(uri)


def test_file_objects_are_world_readable_and_no_temp_files_remain(tmp_path: Path, files: FileStore) -> None:
    uri = f"file://{tmp_path}/rel/dist.tar.zst"
    files.put_bytes_if_absent(uri, b"data")
    files.put_bytes_if_absent(uri, b"other")
    assert stat.S_IMODE((tmp_path / "rel" / "dist.tar.zst").stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == ["dist.tar.zst"]


def test_file_list_skips_uploads_in_progress(tmp_path: Path, files: FileStore) -> None:
    files.put_bytes_if_absent(f"file://{tmp_path}/d/done", b"x")
    (tmp_path / "d" / ".tmp-abc.part").write_bytes(b"partial")
    assert [info.uri for info in files.list(f"file://{tmp_path}/d/")] == [f"file://{tmp_path}/d/done"]


def test_file_directory_is_not_an_object(tmp_path: Path, files: FileStore) -> None:
    (tmp_path / "dir").mkdir()
    assert files.head(f"file://{tmp_path}/dir") is None
    with pytest.raises(ArtifactNotFound):
        files.open_read(f"file://{tmp_path}/dir")


# --------------------------------------------------------------------------- S3 specifics


def test_s3_second_put_returns_false_and_keeps_original(s3: S3Store) -> None:
    # moto implements If-None-Match on PutObject (412 PreconditionFailed), so this exercises
    # the conditional write itself, not only the HEAD shortcut in front of it.
    uri = f"s3://{BUCKET}/rel/dist.tar.zst"
    assert s3.put_bytes_if_absent(uri, b"first", content_type="application/zstd") is True
    assert s3._put(uri, BUCKET, "rel/dist.tar.zst", io.BytesIO(b"second"), None, "application/zstd") is False
    with s3.open_read(uri) as reader:
        assert reader.read() == b"first"
    head = s3._client.head_object(Bucket=BUCKET, Key="rel/dist.tar.zst")
    assert head["ContentType"] == "application/zstd"


def test_s3_missing_bucket_is_the_operators_to_fix_not_the_objects(s3: S3Store) -> None:
    with pytest.raises(StoreAccessDenied, match="the bucket does not exist"):
        s3.open_read("s3://no-such-bucket-here/key")
    with pytest.raises(StoreAccessDenied, match="the bucket does not exist"):  # a HEAD's 404 has no body
        s3.head("s3://no-such-bucket-here/key")
    assert s3.head(f"s3://{BUCKET}/no-such-key") is None


def test_s3_uri_must_name_an_object(s3: S3Store) -> None:
    for uri in (f"s3://{BUCKET}/", f"s3://{BUCKET}/dir/", f"file:///{BUCKET}/x"):
        with pytest.raises(StoreError):
            s3.head(uri)


def _count_calls(store: S3Store) -> list[str]:
    """The names of the S3 operations the store's client sends (botocore's event hook)."""
    calls: list[str] = []
    store._client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def test_s3_conditional_put_needs_no_head(s3: S3Store) -> None:
    """If-None-Match does the write-once check: a new release costs one request, not two."""
    calls = _count_calls(s3)
    assert s3.put_bytes_if_absent(f"s3://{BUCKET}/new", b"first") is True
    assert s3.put_bytes_if_absent(f"s3://{BUCKET}/new", b"second") is False
    assert calls == ["PutObject", "PutObject"]
    with s3.open_read(f"s3://{BUCKET}/new") as reader:
        assert reader.read() == b"first"


@pytest.mark.parametrize(
    "raw",
    [
        "Mon, 30 Nov 2026 14:07:38 GMT",
        "2026-11-30T14:07:38.000Z",
        "2026-11-30T14:07:38+02:00",
        "2026-11-30T14:07:38",
        "1764511658",
    ],
)
def test_s3_timestamps_parse_as_botocore_parses_them_without_dateutil(raw: str) -> None:
    assert parse_timestamp(raw) == botocore.utils.parse_timestamp(raw)


def test_s3_responses_use_the_fast_timestamp_parser(s3: S3Store) -> None:
    s3.put_bytes_if_absent(f"s3://{BUCKET}/dated", b"x")
    response = s3._client.head_object(Bucket=BUCKET, Key="dated")
    assert response["LastModified"].tzinfo is not None  # a datetime, as before
    parser = s3._client._endpoint._response_parser_factory.create_parser("rest-xml")
    assert parser._timestamp_parser is parse_timestamp


def test_s3_head_before_put_for_servers_ignoring_the_condition(s3: S3Store) -> None:
    store = S3Store(S3Config(access_key_id="testing", secret_access_key="testing", head_before_put=True))
    calls = _count_calls(store)
    assert store.put_bytes_if_absent(f"s3://{BUCKET}/old-server", b"first") is True
    assert store.put_bytes_if_absent(f"s3://{BUCKET}/old-server", b"second") is False
    # HeadBucket: a HEAD's 404 could be the bucket (store faults); the second upload never starts
    assert calls == ["HeadObject", "HeadBucket", "PutObject", "HeadObject"]


def test_s3_unreachable_endpoint_is_transient(s3_env: None) -> None:
    config = S3Config(
        endpoint_url="http://127.0.0.1:9",
        access_key_id="k",
        secret_access_key="s",
        connect_timeout=1,
        read_timeout=1,
        max_attempts=1,
    )
    store = S3Store(config)
    with pytest.raises(TransientStoreError):
        store.head(f"s3://{BUCKET}/key")
    with pytest.raises(TransientStoreError):
        store.open_read(f"s3://{BUCKET}/key")


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("NoSuchKey", 404), ArtifactNotFound),
        (client_error("404", 404), ArtifactNotFound),
        (client_error("NoSuchBucket", 404), StoreAccessDenied),
        (client_error("AccessDenied", 403), StoreAccessDenied),
        (client_error("403", 403), StoreAccessDenied),  # HEAD has no body, hence no code
        (client_error("InvalidAccessKeyId", 403), StoreAccessDenied),
        (client_error("SignatureDoesNotMatch", 403), StoreAccessDenied),
        (client_error("ExpiredToken", 400), StoreAccessDenied),
        (client_error("RequestTimeTooSkewed", 403), StoreAccessDenied),
        (NoCredentialsError(), StoreAccessDenied),
        (client_error("InvalidArgument", 400), StoreError),
        (client_error("SlowDown", 503), TransientStoreError),
        (client_error("InternalError", 500), TransientStoreError),
        (client_error("RequestTimeout", 400), TransientStoreError),
        (client_error("TooManyRequests", 429), TransientStoreError),
        (ReadTimeoutError(endpoint_url="http://s3"), TransientStoreError),
    ],
)
def test_s3_error_classification(error: Exception, expected: type[StoreError]) -> None:
    assert type(classify_error(error, "GET s3://b/k")) is expected


def test_s3_body_failures_while_streaming_are_transient() -> None:
    class DroppingBody:
        def read(self, size: int) -> bytes:
            raise ReadTimeoutError(endpoint_url="http://s3")

        def close(self) -> None:
            pass

    reader: BinaryIO = io.BufferedReader(_BodyReader(DroppingBody(), "s3://b/k"))
    with pytest.raises(TransientStoreError):
        reader.read(10)


def test_s3_config_requires_both_keys() -> None:
    with pytest.raises(ValueError, match="must be set together"):
        S3Config(access_key_id="only-the-id")


# --------------------------------------------------------------------------- URIs and router


def test_parse_uri() -> None:
    assert parse_uri("file:///var/lib/x") == ("file", None, "/var/lib/x")
    assert parse_uri("file://localhost/var/lib/x") == ("file", None, "/var/lib/x")
    assert parse_uri("s3://bucket/a/b?c#d") == ("s3", "bucket", "a/b?c#d")  # keys are literal
    assert parse_uri("S3://bucket/") == ("s3", "bucket", "")
    for bad in ("/plain/path", "http://x/y", "s3:///key", "file://host/x", "file://rel"):
        with pytest.raises(StoreError):
            parse_uri(bad)


def test_join_uri() -> None:
    assert join_uri("s3://bucket/releases/", "ns", "/dep/", "ver") == "s3://bucket/releases/ns/dep/ver"
    assert join_uri("file:///", "data", "x") == "file:///data/x"
    assert join_uri("s3://bucket", "a/b") == "s3://bucket/a/b"
    for bad in ("..", "", "a/../b", "./a"):
        with pytest.raises(StoreError):
            join_uri("s3://bucket", bad)


def test_router_dispatches_by_scheme(tmp_path: Path, s3: S3Store) -> None:
    router = StoreRouter(FileStore(), s3)
    file_uri, s3_uri = f"file://{tmp_path}/x", f"s3://{BUCKET}/x"
    assert router.put_bytes_if_absent(file_uri, b"local") is True
    assert router.put_bytes_if_absent(s3_uri, b"remote") is True
    assert (tmp_path / "x").read_bytes() == b"local"
    with router.open_read(s3_uri) as reader:
        assert reader.read() == b"remote"
    assert [info.uri for info in router.list(f"s3://{BUCKET}/")] == [s3_uri]
    assert router.delete(file_uri) is True and router.head(file_uri) is None
    assert isinstance(router, ArtifactStore)


def test_router_without_s3_gives_a_clear_error(tmp_path: Path) -> None:
    router = StoreRouter(FileStore())
    with pytest.raises(StoreError, match="S3 is not configured"):
        router.open_read(f"s3://{BUCKET}/x")
    assert router.put_bytes_if_absent(f"file://{tmp_path}/y", b"fine") is True


def test_router_from_settings(tmp_path: Path, s3_env: None) -> None:
    assert StoreRouter.from_settings(Settings.defaults()).s3_store is None
    router = StoreRouter.from_settings(
        Settings.from_env({"MIOSA_S3_ENDPOINT": "http://minio:9000", "MIOSA_FILE_ROOT": str(tmp_path)})
    )
    assert isinstance(router.s3_store, S3Store)
    assert router.s3_store.config.endpoint_url == "http://minio:9000"
    with pytest.raises(StoreError, match="outside the store root"):
        router.head("file:///etc/hostname")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (errno.EACCES, StoreAccessDenied),
        (errno.EPERM, StoreAccessDenied),
        (errno.EROFS, StoreAccessDenied),
        (errno.ENOSPC, TransientStoreError),
        (errno.EIO, TransientStoreError),
        (errno.EISDIR, StoreError),
    ],
    ids=["EACCES", "EPERM", "EROFS", "ENOSPC", "EIO", "EISDIR"],
)
def test_file_store_errors_say_who_must_act(number: int, expected: type[StoreError]) -> None:
    assert type(_os_error(OSError(number, os.strerror(number)), "cannot write file:///x")) is expected
