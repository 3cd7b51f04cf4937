"""Retrying a reverted rollout through the deploy.miosa.io/retry annotation (spec untouched)."""

from __future__ import annotations

from datetime import timedelta

from miosa_operator.api import meta

from .test_observability import DEPLOYMENTS, NS, Cluster


def reverted_cluster(auto: bool = False) -> Cluster:
    """site-v1 live, the rollout of site-v2 reverted after its deadline."""
    cluster = Cluster()
    cluster.version("site-v1", 1)
    cluster.deployment(**({"promotionPolicy": "Auto"} if auto else {}))
    if not auto:
        cluster.promote("site-v1")
    cluster.settle()
    cluster.version("site-v2", 2)
    if not auto:
        cluster.promote("site-v2")
    assert cluster.reconcile()
    cluster.clock.advance(timedelta(seconds=301))
    assert not cluster.reconcile()
    return cluster


def status(cluster: Cluster) -> dict:
    return (cluster.kube.peek(DEPLOYMENTS, NS, "site") or {})["status"]


def annotate(cluster: Cluster, value: str) -> None:
    cluster.kube.patch(DEPLOYMENTS, NS, "site", {"metadata": {"annotations": {meta.ANNOTATION_RETRY: value}}})


def test_a_reverted_version_stays_held_until_a_retry_is_asked() -> None:
    cluster = reverted_cluster()
    assert status(cluster)["revertedVersions"] == ["site-v2"] and status(cluster)["liveVersion"] == "site-v1"
    assert not cluster.reconcile() and "rollout" not in status(cluster)  # held: spec did not change
    generation = cluster.kube.peek(DEPLOYMENTS, NS, "site")["metadata"]["generation"]

    annotate(cluster, "site-v2@2026-05-14T12:10:00.000000Z")
    assert cluster.reconcile()  # rolling out again
    now = status(cluster)
    assert now["rollout"]["version"] == "site-v2" and now["revertedVersions"] == []
    assert now["lastRetryToken"] == "site-v2@2026-05-14T12:10:00.000000Z"
    cluster.available()
    cluster.settle()
    assert status(cluster)["liveVersion"] == "site-v2" and status(cluster)["history"][-1]["action"] == "promote"
    after = cluster.kube.peek(DEPLOYMENTS, NS, "site")
    assert after["metadata"]["generation"] == generation and after["spec"]["promotedVersion"] == "site-v2"  # spec untouched


def test_a_retry_is_acted_on_once() -> None:
    cluster = reverted_cluster()
    annotate(cluster, "site-v2@1")
    assert cluster.reconcile()
    cluster.clock.advance(timedelta(seconds=301))  # fails again
    assert not cluster.reconcile()
    assert status(cluster)["revertedVersions"] == ["site-v2"]
    assert not cluster.reconcile() and "rollout" not in status(cluster)  # the same value does not retry twice
    annotate(cluster, "site-v2@2")
    assert cluster.reconcile() and status(cluster)["rollout"]["version"] == "site-v2"


def test_a_retry_of_another_version_releases_only_that_one() -> None:
    cluster = reverted_cluster()
    annotate(cluster, "site-v9@1")
    assert not cluster.reconcile()
    assert status(cluster)["revertedVersions"] == ["site-v2"] and status(cluster)["lastRetryToken"] == "site-v9@1"


def test_auto_policy_takes_a_retried_version_again() -> None:
    cluster = reverted_cluster(auto=True)
    assert status(cluster)["revertedVersions"] == ["site-v2"] and status(cluster)["liveVersion"] == "site-v1"
    cluster.available()  # the revert put v1's workload back
    assert not cluster.reconcile()  # Auto skips the reverted version
    annotate(cluster, "site-v2@1")
    assert cluster.reconcile() and status(cluster)["rollout"]["version"] == "site-v2"
