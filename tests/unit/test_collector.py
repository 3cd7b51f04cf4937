"""The retention collector against the in-memory API server and a real ``FileStore``.

The claim protocol is what is under test: a version is claimed (a status write with the
listed resourceVersion as precondition) before any artifact is deleted, a version marked for
rollout or protected since the listing is left alone, a claimed one is never promoted, and a
sweep that died after claiming is finished by the next.  Plus the RetentionPolicy status.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from miosa_operator.api import meta
from miosa_operator.api.models import VersionKind
from miosa_operator.controllers.retention import Collector, PeriodicCollector, SweepReport
from miosa_operator.domain.promotion import VersionView, check_promotable
from miosa_operator.domain.retention import Policy
from miosa_operator.kube.client import ApiError, TransientApiError
from miosa_operator.store import FileStore, StoreRouter

from .fakes import FakeClock, FakeKube, RecordingEvents, iso
from .kstatus import kstatus

Obj = dict[str, Any]
NS = "tenant-a"
VERSIONS, DEPLOYMENTS = meta.VERSION_PLURAL, meta.DEPLOYMENT_PLURAL


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.clock = FakeClock()
        self.kube = FakeKube(clock=self.clock)
        self.events = RecordingEvents()
        self.store = StoreRouter(FileStore())
        self.collector = Collector(self.kube, self.store, Policy(retain_days=30, rollback_window=1), self.events, self.clock)
        self.deployment = self.kube.create(
            DEPLOYMENTS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "Deployment",
                "metadata": {"name": "site", "namespace": NS},
                "spec": {"kind": "static"},
            },
        )

    def version(self, name: str, *, archived_days_ago: int = 40) -> Path:
        release = self.tmp / "releases" / name / "dist.tar.zst"
        release.parent.mkdir(parents=True, exist_ok=True)
        release.write_bytes(b"release of " + name.encode())
        self.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "deploymentRef": {"name": "site"},
                    "kind": "static",
                    "artifact": {"uri": "file:///up/x.tar", "sha256": "a" * 64},
                },
            },
        )
        then = iso(self.clock() - timedelta(days=archived_days_ago))
        for status in (
            {"state": "created"},
            {"state": "building"},
            {"state": "ready", "readyAt": then, "artifactUri": f"file://{release}"},
            {"state": "archived", "archivedAt": then},
        ):
            self.kube.patch_status(VERSIONS, NS, name, status)
        return release

    def get(self, name: str) -> Obj:
        obj = self.kube.peek(VERSIONS, NS, name)
        assert obj is not None
        return obj


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_a_version_is_claimed_before_its_artifacts_are_deleted(env: Env) -> None:
    release = env.version("site-v1")
    report = env.collector.sweep()
    assert [d.name for d in report.collected] == ["site-v1"]
    assert not release.exists()
    status = env.get("site-v1")["status"]
    assert status["collectionClaimedAt"] and status["artifactsCollectedAt"]
    claim = next(c for c in env.kube.calls if c.method == "patch_status" and "collectionClaimedAt" in c.args["status"])
    assert claim.args["resource_version"] is not None  # a compare-and-swap on what was listed
    assert not check_promotable("site", VersionKind.STATIC, "site-v1", VersionView.from_body(env.get("site-v1"))) is None


def test_a_version_marked_for_rollout_after_the_listing_is_left_alone(env: Env) -> None:
    release = env.version("site-v1")

    def promoted_meanwhile(**_: Any) -> None:  # a Deployment marks it between listing and claim
        env.kube.patch_status(
            VERSIONS,
            NS,
            "site-v1",
            {"promotion": {"deploymentUid": env.deployment["metadata"]["uid"], "since": iso(env.clock())}},
        )

    env.kube.inject("list", promoted_meanwhile, when=lambda plural, **_: plural == DEPLOYMENTS)
    report = env.collector.sweep()
    assert report.collected == [] and [d.name for d in report.skipped] == ["site-v1"]
    assert release.exists() and "collectionClaimedAt" not in env.get("site-v1")["status"]


def test_a_version_marked_before_the_listing_is_kept_as_being_promoted(env: Env) -> None:
    release = env.version("site-v1")
    env.kube.patch_status(
        VERSIONS, NS, "site-v1", {"promotion": {"deploymentUid": env.deployment["metadata"]["uid"], "since": iso(env.clock())}}
    )
    report = env.collector.sweep()
    assert report.plan.kept_because() == {"being promoted": 1} and release.exists()
    # A mark whose Deployment is gone is stale: the version is collectable again.
    env.kube.remove(DEPLOYMENTS, NS, "site")
    assert [d.name for d in env.collector.sweep().collected] == ["site-v1"]


def test_a_version_promoted_since_the_listing_is_not_claimed(env: Env) -> None:
    release = env.version("site-v1")

    def promoted(**_: Any) -> None:
        env.kube.patch(DEPLOYMENTS, NS, "site", {"spec": {"promotedVersion": "site-v1"}})

    env.kube.inject("list", promoted, when=lambda plural, **_: plural == meta.RETENTION_PLURAL)
    assert env.collector.sweep().collected == []
    assert release.exists() and "collectionClaimedAt" not in env.get("site-v1")["status"]


def test_the_crd_refuses_a_claim_on_a_marked_version(env: Env) -> None:
    env.version("site-v1")
    env.kube.patch_status(VERSIONS, NS, "site-v1", {"collectionClaimedAt": iso(env.clock())})
    with pytest.raises(ApiError) as refused:
        env.kube.patch_status(VERSIONS, NS, "site-v1", {"promotion": {"deploymentUid": "x", "since": iso(env.clock())}})
    assert refused.value.status == 422
    with pytest.raises(ApiError):
        env.kube.patch_status(VERSIONS, NS, "site-v1", {"collectionClaimedAt": None})


def test_a_sweep_that_died_after_claiming_is_finished_by_the_next(env: Env) -> None:
    release = env.version("site-v1")

    class Broken(Exception):
        pass

    def fail(uri: str) -> bool:
        raise Broken("store down")

    real_delete = env.store.delete
    env.store.delete = fail  # type: ignore[method-assign]
    env.kube.create(
        meta.RETENTION_PLURAL,
        {
            "apiVersion": meta.API_VERSION,
            "kind": "RetentionPolicy",
            "metadata": {"name": "default", "namespace": NS},
            "spec": {"retainDays": 30, "rollbackWindow": 1},
        },
    )
    report = env.collector.sweep()
    assert [d.name for d in report.failed] == ["site-v1"] and release.exists()
    assert env.get("site-v1")["status"]["collectionClaimedAt"]
    policy = env.kube.peek(meta.RETENTION_PLURAL, NS, "default")
    assert policy is not None and kstatus(policy) == "InProgress"
    assert next(c for c in policy["status"]["conditions"] if c["type"] == "Ready")["reason"] == "CollectionFailed"

    # Meanwhile somebody points promotedVersion at it: the claim is final all the same.
    env.kube.patch(DEPLOYMENTS, NS, "site", {"spec": {"promotedVersion": "site-v1"}})
    env.store.delete = real_delete  # type: ignore[method-assign]
    report = env.collector.sweep()
    assert [d.name for d in report.collected] == ["site-v1"] and not release.exists()


def test_retention_policy_status_is_written_by_each_sweep_and_on_change(env: Env) -> None:
    env.kube.create(
        meta.RETENTION_PLURAL,
        {
            "apiVersion": meta.API_VERSION,
            "kind": "RetentionPolicy",
            "metadata": {"name": "default", "namespace": NS},
            "spec": {"retainDays": 30},
        },
    )
    policy = env.kube.peek(meta.RETENTION_PLURAL, NS, "default")
    assert policy is not None
    env.collector.accept(policy)
    policy = env.kube.peek(meta.RETENTION_PLURAL, NS, "default")
    assert policy is not None and kstatus(policy) == "Current"
    assert policy["status"]["observedGeneration"] == 1 and policy["status"]["conditions"][0]["reason"] == "PolicyAccepted"
    writes = len(env.kube.writes)
    env.collector.accept(policy)  # its own status write's event: nothing to do
    assert len(env.kube.writes) == writes

    env.version("site-v1")
    env.version("site-v2", archived_days_ago=1)
    env.clock.advance(60)
    env.collector.sweep()
    policy = env.kube.peek(meta.RETENTION_PLURAL, NS, "default")
    assert policy is not None
    assert policy["status"]["lastSweepAt"] == iso(env.clock()) and policy["status"]["collected"] == 1
    ready = policy["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Swept") and kstatus(policy) == "Current"
    assert env.collector.sweep(dry_run=True).dry_run  # a dry run writes nothing
    assert env.kube.peek(meta.RETENTION_PLURAL, NS, "default")["status"]["lastSweepAt"] == iso(env.clock())  # type: ignore[index]


# =========================================================================== the periodic collector


class CountingSweeps:
    """A collector whose sweeps are counted; the first ``failures`` of them raise."""

    def __init__(self, inner: Collector, failures: int = 0) -> None:
        self.inner, self.failures = inner, failures
        self.runs = threading.Semaphore(0)
        self.calls = 0

    def sweep(self) -> SweepReport:
        self.calls += 1
        try:
            if self.calls <= self.failures:
                raise TransientApiError("503 Service Unavailable", 503)
            return self.inner.sweep()
        finally:
            self.runs.release()


def test_the_periodic_collector_sweeps_again_after_a_failed_sweep(env: Env) -> None:
    release = env.version("site-v1")
    sweeps = CountingSweeps(env.collector, failures=1)
    periodic = PeriodicCollector(sweeps, interval=0.01, first_delay=0.01)
    periodic.start()
    try:
        for _ in range(2):
            assert sweeps.runs.acquire(timeout=10)
    finally:
        periodic.stop()
    assert sweeps.calls >= 2 and not release.exists()
    assert env.get("site-v1")["status"]["artifactsCollectedAt"]


def test_a_stopped_periodic_collector_sweeps_no_more(env: Env) -> None:
    sweeps = CountingSweeps(env.collector)
    periodic = PeriodicCollector(sweeps, interval=0.01, first_delay=0.01)
    periodic.start()
    assert sweeps.runs.acquire(timeout=10)
    periodic.stop()
    periodic._thread.join(timeout=10)
    assert not periodic._thread.is_alive()
    calls = sweeps.calls
    time.sleep(0.05)
    assert sweeps.calls == calls


def test_a_version_deleted_before_its_claim_is_skipped(env: Env) -> None:
    release = env.version("site-v1")
    env.kube.inject(
        "patch_status",
        lambda **_: env.kube.remove(VERSIONS, NS, "site-v1"),
        when=lambda plural, status=None, **_: plural == VERSIONS and "collectionClaimedAt" in (status or {}),
    )
    report = env.collector.sweep()
    assert report.collected == [] and release.exists()


def test_a_refused_claim_of_another_kind_is_the_operators_fault_and_reported(env: Env) -> None:
    env.version("site-v1")
    env.kube.inject("patch_status", ApiError("403 Forbidden", 403), when=lambda plural, **_: plural == VERSIONS)
    report = env.collector.sweep()
    assert report.collected == [] and len(report.failed) == 1
    assert env.get("site-v1")["status"]["state"] == "archived" and "collectionClaimedAt" not in env.get("site-v1")["status"]


def test_a_version_deleted_while_its_artifacts_are_collected_is_not_reported_collected(env: Env) -> None:
    release = env.version("site-v1")
    env.kube.inject(
        "patch_status",
        lambda **_: env.kube.remove(VERSIONS, NS, "site-v1"),
        when=lambda plural, status=None, **_: plural == VERSIONS and "artifactsCollectedAt" in (status or {}),
    )
    report = env.collector.sweep()
    assert report.collected == [] and not release.exists()
    assert not env.events.of("ArtifactsCollected")
