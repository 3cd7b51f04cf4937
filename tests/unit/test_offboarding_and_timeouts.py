"""A deleted tenant's releases leave the store; every Kubernetes call of the operator ends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from miosa_operator.controllers.offboarding import PeriodicOffboarding, TenantOffboarding
from miosa_operator.kube.client import Kube, TransientApiError
from miosa_operator.kube.timeouts import Timeouts
from miosa_operator.settings import Settings
from miosa_operator.store.filestore import FileStore


class Namespaces:
    """The two questions offboarding asks the API server."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def namespace_names(self) -> set[str]:
        return set(self.names)

    def namespace_exists(self, name: str) -> bool:
        return name in self.names


def put(store: FileStore, uri: str) -> None:
    store.put_bytes_if_absent(uri, b"release")


@pytest.fixture
def releases(tmp_path: Path) -> tuple[FileStore, str]:
    store = FileStore(tmp_path)
    base = f"file://{tmp_path}/releases"
    for tenant in ("gone", "alive"):
        put(store, f"{base}/{tenant}/dep_1/ver_1/dist.tar.zst")
        put(store, f"{base}/{tenant}/dep_1/ver_1/build.log")
    put(store, f"{base}/not_a_namespace!/x")  # never ours to judge
    put(store, f"{base}/loose-file")
    return store, base


def keys(store: FileStore, base: str) -> list[str]:
    return [item.uri.removeprefix(base + "/") for item in store.list(base + "/")]


def test_the_sweep_removes_only_tenants_whose_namespace_is_gone(releases: tuple[FileStore, str]) -> None:
    store, base = releases
    offboarding = TenantOffboarding(Namespaces("alive", "default"), store, base)
    assert offboarding.stored_tenants() == {"gone", "alive"}
    assert offboarding.sweep() == {"gone": 2}
    assert keys(store, base) == [
        "alive/dep_1/ver_1/build.log", "alive/dep_1/ver_1/dist.tar.zst", "loose-file", "not_a_namespace!/x",
    ]  # fmt: skip
    assert offboarding.sweep() == {}


def test_collect_leaves_a_namespace_that_exists_again(releases: tuple[FileStore, str]) -> None:
    store, base = releases
    namespaces = Namespaces("alive", "gone")  # re-created under the same name before the event was handled
    offboarding = TenantOffboarding(namespaces, store, base)
    assert offboarding.collect("gone") == 0
    namespaces.names.discard("gone")
    assert offboarding.collect("gone") == 2
    assert offboarding.collect("../alive") == 0  # not a namespace name: nothing outside its prefix
    assert len(keys(store, base)) == 4


class FlakyNamespaces(Namespaces):
    """The API server is unavailable for the first listing of namespaces."""

    def __init__(self, *names: str) -> None:
        super().__init__(*names)
        self.listings = threading.Semaphore(0)
        self.failed = False

    def namespace_names(self) -> set[str]:
        self.listings.release()
        if not self.failed:
            self.failed = True
            raise TransientApiError("503 Service Unavailable", 503)
        return super().namespace_names()


def test_the_periodic_sweep_goes_on_after_a_failed_one(releases: tuple[FileStore, str]) -> None:
    store, base = releases
    namespaces = FlakyNamespaces("alive")
    periodic = PeriodicOffboarding(TenantOffboarding(namespaces, store, base), interval=0.01, first_delay=0.01)
    periodic.start()
    try:
        for _ in range(3):  # the failed sweep, the one that collects, one with nothing left
            assert namespaces.listings.acquire(timeout=10)
    finally:
        periodic.stop()
    assert namespaces.failed and not [k for k in keys(store, base) if k.startswith("gone/")]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: a half-open connection, as far as a client knows."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_call_to_an_api_server_that_never_answers_ends_as_a_transient_error(silent_server: int) -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{silent_server}"
    kube = Kube(client.ApiClient(configuration), Timeouts(connect=0.5, read=0.5))
    started = time.monotonic()
    with pytest.raises(TransientApiError):
        kube.get("deploymentversions", "tenant-a", "v1")
    assert time.monotonic() - started < 5


def test_the_operator_and_the_admission_lookups_get_their_timeouts_from_settings() -> None:
    settings = Settings.defaults(kube_connect_timeout=3, kube_read_timeout=20, admission_timeout=2)
    assert settings.kube_timeouts == Timeouts(connect=3, read=20)
    assert settings.admission_timeouts == Timeouts(connect=2, read=2)
    assert Settings.from_env({"MIOSA_KUBE_READ_TIMEOUT": "7"}).kube_timeouts.request_timeout == (5.0, 7.0)
