"""Whose fault is it: sources confined per tenant, store faults retried and shown, queued
ingestions, and crash loops that end by themselves (the VersionController, on FakeKube and a
real FileStore, as in ``test_version_controller``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import hostile_bundles as hostile
from miosa_operator.api.models import VersionState
from miosa_operator.controllers.common import Retry
from miosa_operator.controllers.ingestion_slots import IngestionSlots
from miosa_operator.ingest.isolation import WARM, WorkerCrashed, ingest_isolated
from miosa_operator.store import StoreAccessDenied, StoreRouter, TransientStoreError
from miosa_operator.store.base import ObjectInfo

from .conftest import NS, SITE, Env, ready_condition, sha256, state, tar_gz
from .kstatus import kstatus

OTHER = "tenant-b"


class SimulatedDeath(BaseException):
    """The operator process dies in the middle of an ingestion (nothing in it runs on)."""


# =========================================================================== sources


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


class CountingStore:
    """The real store, counting every call that touches an object."""

    def __init__(self, inner: StoreRouter) -> None:
        self.inner = inner
        self.touched: list[tuple[str, str]] = []

    def head(self, uri: str) -> ObjectInfo | None:
        self.touched.append(("head", uri))
        return self.inner.head(uri)

    def open_read(self, uri: str) -> BinaryIO:
        self.touched.append(("open_read", uri))
        return self.inner.open_read(uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def with_store(env: Env, store: Any, **kwargs: Any) -> None:
    from miosa_operator.controllers.static_build import in_process
    from miosa_operator.controllers.versions import VersionController

    env.controller = VersionController(
        env.kube, store, env.config, env.events, env.clock, ingest=kwargs.pop("ingest", in_process), run_id=env.run_id, **kwargs
    )


def foreign_sources(env: Env) -> dict[str, str]:
    theirs = env.upload("site.tar.gz", tar_gz(SITE), namespace=OTHER)
    return {
        "another tenant's upload": theirs,
        "outside every tenant": f"file://{env.tmp}/elsewhere/site.tar.gz",
        "the releases": f"file://{env.releases}/{OTHER}/dep/ver/dist.tar.zst",
        "dot-dot": f"file://{env.uploads}/{NS}/../{OTHER}/site.tar.gz",
        "escaped dot-dot": f"file://{env.uploads}/{NS}/%2e%2e/{OTHER}/site.tar.gz",
        "escaped slash": f"file://{env.uploads}/{NS}%2F..%2F{OTHER}/site.tar.gz",
        "four slashes": f"file:///{env.uploads}/{OTHER}/site.tar.gz",
        "a prefix of the name": f"file://{env.uploads}/{NS}x/site.tar.gz",
    }


@pytest.mark.parametrize(
    "case",
    [
        "another tenant's upload",
        "outside every tenant",
        "the releases",
        "dot-dot",
        "escaped dot-dot",
        "escaped slash",
        "four slashes",
        "a prefix of the name",
    ],
)
def test_a_source_outside_the_tenants_uploads_fails_before_a_byte_is_read(env: Env, case: str) -> None:
    counting = CountingStore(env.store)
    with_store(env, counting)
    uri = foreign_sources(env)[case]
    env.deployment("site")
    env.static_version("site-v1", "site", uri, "a" * 64)

    version = env.run("site-v1")
    ready = ready_condition(version)
    assert (state(version), ready["reason"], kstatus(version)) == ("failed", "SourceNotAllowed", "Failed")
    assert [t for t in counting.touched if t[1] != version["status"].get("buildLogUri")] == []
    assert env.events.reasons() == ["SourceNotAllowed"]


def test_a_refusal_says_the_same_whether_or_not_the_object_exists(env: Env) -> None:
    present = env.upload("site.tar.gz", tar_gz(SITE), namespace=OTHER)
    absent = present.replace("site.tar.gz", "nothing-here.tar.gz")
    env.deployment("site")
    env.static_version("probe-present", "site", present, "a" * 64)
    env.static_version("probe-absent", "site", absent, "a" * 64)
    messages = [ready_condition(env.run(name))["message"] for name in ("probe-present", "probe-absent")]
    assert messages[0].replace("site.tar.gz", "X") == messages[1].replace("nothing-here.tar.gz", "X")


def test_a_symlink_in_the_tenants_uploads_cannot_lead_into_anothers(env: Env) -> None:
    theirs = Path(env.upload("site.tar.gz", tar_gz(SITE), namespace=OTHER).removeprefix("file://"))
    link = env.uploads / NS / "link.tar.gz"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(theirs)
    env.deployment("site")
    env.static_version("site-v1", "site", f"file://{link}", sha256(theirs.read_bytes()))
    assert ready_condition(env.run("site-v1"))["reason"] == "SourceNotAllowed"


def test_any_spelling_of_the_tenants_own_upload_is_read_as_normalised(env: Env) -> None:
    data = tar_gz(SITE)
    env.upload("dir/site.tar.gz", data)
    spelled = f"file:///{env.uploads}/./{NS}//dir/sub/../site%2Etar.gz"
    env.deployment("site")
    env.static_version("site-v1", "site", spelled, sha256(data))
    assert state(env.run("site-v1")) == "ready"


def test_build_log_uri_is_confined_too(env: Env) -> None:
    uri, digest = env.bundle()
    theirs = f"file://{env.uploads}/{OTHER}/build.log"
    env.deployment("site")
    env.deployment("api", kind="dynamic")
    env.static_version("site-v1", "site", uri, digest, buildLog={"uri": theirs})
    runtime = {"image": "registry.example/api:1", "port": 8080, "healthCheckPath": "/healthz"}
    env.version("api-v1", {"deploymentRef": {"name": "api"}, "kind": "dynamic", "runtime": runtime, "buildLog": {"uri": theirs}})
    for name in ("site-v1", "api-v1"):
        ready = ready_condition(env.run(name))
        assert ready["reason"] == "SourceNotAllowed" and "spec.buildLog.uri" in ready["message"]
    env.static_version("site-v2", "site", uri, digest, buildLog={"uri": f"file://{env.uploads}/{NS}/ci/build.log"})
    assert state(env.run("site-v2")) == "ready"


def test_operators_can_widen_the_sources(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    env = Env(tmp_path, source_prefixes=(f"file://{shared}/",))
    data = tar_gz(SITE)
    (shared / "site.tar.gz").parent.mkdir(parents=True)
    (shared / "site.tar.gz").write_bytes(data)
    env.deployment("site")
    env.static_version("site-v1", "site", f"file://{shared}/site.tar.gz", sha256(data))
    assert state(env.run("site-v1")) == "ready"


# =========================================================================== store faults


class FaultyStore:
    """The real store, but every call fails with ``fault`` while it is set."""

    def __init__(self, inner: StoreRouter, fault: Exception | None = None, only: Callable[[str], bool] | None = None) -> None:
        self.inner, self.fault, self.only = inner, fault, only or (lambda _: True)

    def _maybe_fail(self, method: str) -> None:
        if self.fault is not None and self.only(method):
            raise self.fault

    def head(self, uri: str) -> ObjectInfo | None:
        self._maybe_fail("head")
        return self.inner.head(uri)

    def open_read(self, uri: str) -> BinaryIO:
        self._maybe_fail("open_read")
        return self.inner.open_read(uri)

    def put_if_absent(self, uri: str, source: BinaryIO, size: int | None = None, content_type: str = "") -> bool:
        self._maybe_fail("put_if_absent")
        return self.inner.put_if_absent(uri, source, size=size, content_type=content_type)

    def put_bytes_if_absent(self, uri: str, data: bytes, content_type: str = "") -> bool:
        self._maybe_fail("put_if_absent")
        return self.inner.put_bytes_if_absent(uri, data, content_type=content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


FAULTS = {
    "access denied on HEAD": (StoreAccessDenied("HEAD: 403 Forbidden"), "head", "StoreAccessDenied", "Failed"),
    "expired token on GET": (StoreAccessDenied("GET: ExpiredToken"), "open_read", "StoreAccessDenied", "Failed"),
    "bucket policy on PUT": (StoreAccessDenied("PUT: AccessDenied"), "put_if_absent", "StoreAccessDenied", "Failed"),
    "5xx on GET": (TransientStoreError("GET: 503 SlowDown"), "open_read", "StoreUnavailable", "InProgress"),
    "timeout on HEAD": (TransientStoreError("HEAD: read timeout"), "head", "StoreUnavailable", "InProgress"),
    "read-only releases": (
        StoreAccessDenied("cannot write: Read-only file system"),
        "put_if_absent",
        "StoreAccessDenied",
        "Failed",
    ),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_a_store_fault_is_retried_shown_and_the_same_version_goes_on_once_fixed(env: Env, case: str) -> None:
    fault, method, reason, verdict = FAULTS[case]
    store = FaultyStore(env.store, fault, only=lambda m: m == method)
    with_store(env, store)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)

    for _ in range(3):
        wait = env.step("site-v1")
        assert isinstance(wait, Retry) and not wait.planned
    version = env.get("site-v1")
    ready = ready_condition(version)
    assert state(version) in ("created", "building") and (ready["reason"], kstatus(version)) == (reason, verdict)
    assert str(fault) in ready["message"]
    assert (version["status"].get("buildAttempts") or {}).get("running") is None  # not an attempt in progress
    assert env.events.reasons() == []

    store.fault = None  # a person fixed the credentials / the store came back
    version = env.run("site-v1")
    assert state(version) == "ready" and kstatus(version) == "Current"
    assert env.events.reasons() == ["Ready"]


def test_an_unreadable_object_inside_the_tenants_prefix_is_the_tenants_fault(env: Env) -> None:
    env.deployment("site")
    directory = env.uploads / NS / "a-directory.tar.gz"
    directory.mkdir(parents=True)
    env.static_version("site-v1", "site", f"file://{directory}", "a" * 64)
    env.clock.advance(600)  # past the grace period: a directory is never an object
    assert ready_condition(env.run("site-v1"))["reason"] == "ArtifactNotFound"


# =========================================================================== queueing


def test_a_version_waits_in_created_for_a_slot_and_goes_on_when_one_frees(tmp_path: Path) -> None:
    env = Env(tmp_path)
    slots = IngestionSlots(total=1, per_tenant=1, tenant_bytes=1 << 30, tenant_pending=10)
    with_store(env, env.store, slots=slots)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    held = slots.acquire("someone-else", "uid-x", 100)

    wait = env.step("site-v1")
    assert isinstance(wait, Retry) and wait.planned
    version = env.get("site-v1")
    assert state(version) == "created"
    assert (ready_condition(version)["reason"], kstatus(version)) == ("IngestionQueued", "InProgress")
    assert "someone-else" not in ready_condition(version)["message"]  # other tenants' load is not shown

    slots.release(held)  # type: ignore[arg-type]
    assert state(env.run("site-v1")) == "ready"
    assert slots.running() == {}


def test_a_bundle_larger_than_the_limit_fails_before_it_is_read(tmp_path: Path) -> None:
    env = Env(tmp_path, max_bundle_bytes=100)
    counting = CountingStore(env.store)
    with_store(env, counting)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    assert ready_condition(env.run("site-v1"))["reason"] == "BundleTooLarge"
    assert ("open_read", uri) not in counting.touched


# =========================================================================== crash loops


def dying_ingest(*args: Any, **kwargs: Any) -> Any:
    raise SimulatedDeath("the operator was killed mid-ingestion")


def restart(env: Env, n: int, ingest: Any = dying_ingest) -> None:
    """A new operator process (a new run id, empty memory) after the previous one died."""
    env.controller = env.operator(f"run_{n}", ingest)


def test_an_ingestion_interrupted_by_abnormal_deaths_ends_with_ingestion_aborted(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)

    for n in range(1, 4):
        restart(env, n)
        with pytest.raises(SimulatedDeath):
            env.step("site-v1")
        attempts = env.get("site-v1")["status"]["buildAttempts"]
        assert (attempts["running"], attempts["interrupted"]) == (f"run_{n}", n - 1)
        assert state(env.get("site-v1")) == "building"

    restart(env, 4)
    assert env.step("site-v1") == VersionState.FAILED
    version = env.get("site-v1")
    ready = ready_condition(version)
    assert (ready["reason"], kstatus(version)) == ("IngestionAborted", "Failed")
    assert "3 times" in ready["message"]
    assert version["status"]["buildAttempts"] == {"interrupted": 3, "startedAt": version["status"]["buildAttempts"]["startedAt"]}
    assert [(e.type, e.reason) for e in env.events.events] == [("Warning", "IngestionAborted")]


def test_the_first_attempt_is_counted_in_the_write_that_sets_building(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.run("site-v1")
    building = [w for w in env.kube.status_writes("deploymentversions", "site-v1") if w.get("state") == "building"]
    assert building and building[0]["buildAttempts"]["running"] == env.run_id


def test_graceful_restarts_never_count(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    stopping = threading.Event()

    def interrupted_ingest(*args: Any, cancel: threading.Event, **kwargs: Any) -> Any:
        from miosa_operator.ingest.isolation import IngestionInterrupted

        cancel.set()  # SIGTERM arrives while the worker runs
        raise IngestionInterrupted("the operator is shutting down")

    for n in range(1, 6):
        env.controller = env.operator(f"run_{n}", interrupted_ingest, stopping=stopping)
        assert isinstance(env.step("site-v1"), Retry)
        assert env.controller.release_attempts() == 0  # the interrupted attempt released itself
        assert env.get("site-v1")["status"]["buildAttempts"].get("running") is None
    env.controller = env.operator("run_final")
    assert state(env.run("site-v1")) == "ready"
    assert env.get("site-v1")["status"]["buildAttempts"]["interrupted"] == 0


def test_a_health_gate_held_at_a_graceful_stop_is_released_and_does_not_count(env: Env) -> None:
    env.deployment("api", kind="dynamic")
    env.dynamic_version("api-v1", "api")
    for n in range(1, 5):
        env.controller = env.operator(f"run_{n}")
        assert isinstance(env.step("api-v1"), Retry)  # the health gate is waiting
        assert env.get("api-v1")["status"]["buildAttempts"]["running"] == f"run_{n}"
        assert env.controller.release_attempts() == 1  # kopf's cleanup on SIGTERM
    assert env.get("api-v1")["status"]["buildAttempts"] == {
        "interrupted": 0,
        "startedAt": env.get("api-v1")["status"]["buildAttempts"]["startedAt"],
    }


def test_a_health_gate_interrupted_by_abnormal_deaths_ends_with_ingestion_aborted(env: Env) -> None:
    env.deployment("api", kind="dynamic")
    env.dynamic_version("api-v1", "api")
    for n in range(1, 4):
        env.controller = env.operator(f"run_{n}")
        assert isinstance(env.step("api-v1"), Retry)  # then SIGKILL: nothing released
    env.controller = env.operator("run_4")
    assert env.step("api-v1") == VersionState.FAILED
    assert ready_condition(env.get("api-v1"))["reason"] == "IngestionAborted"


def test_a_crashing_worker_counts_as_an_interruption(env: Env) -> None:
    def crashing(*args: Any, **kwargs: Any) -> Any:
        raise WorkerCrashed("the ingestion worker died without a verdict (signal 11)")

    env.controller = env.operator("run_1", crashing)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    for n in range(1, 4):
        wait = env.step("site-v1")
        assert isinstance(wait, Retry) and f"interruption {n} of 3" in str(wait)
    assert env.step("site-v1") == VersionState.FAILED
    assert ready_condition(env.get("site-v1"))["reason"] == "IngestionAborted"


# =========================================================================== the worker, for real


def test_the_controller_ingests_in_a_limited_worker(tmp_path: Path) -> None:
    env = Env(tmp_path, ingest=ingest_isolated)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    version = env.run("site-v1")
    assert state(version) == "ready"
    assert "ingestion worker:" in env.path(version["status"]["buildLogUri"]).read_text()


def test_a_bundle_over_the_memory_budget_fails_with_resource_limit_exceeded(tmp_path: Path) -> None:
    env = Env(tmp_path, ingest=ingest_isolated, ingest_memory=96 << 20)
    data = hostile.widest_accepted()
    uri = env.upload("wide.tar", data)
    env.deployment("site")
    env.static_version("site-v1", "site", uri, sha256(data))
    version = env.run("site-v1")
    assert ready_condition(version)["reason"] == "ResourceLimitExceeded"
    assert "MIOSA_INGEST_MEMORY" in ready_condition(version)["message"]


def test_nothing_is_left_running_after_ingestions(tmp_path: Path) -> None:
    import multiprocessing

    env = Env(tmp_path, ingest=ingest_isolated)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.run("site-v1")
    workers = [p for p in multiprocessing.active_children() if p.name == "miosa-ingest"]
    assert len(workers) == WARM.idle() == 1  # the tenant's warm worker, waiting for its next bundle
    WARM.retire_all()
    assert [p for p in multiprocessing.active_children() if p.name == "miosa-ingest"] == []
