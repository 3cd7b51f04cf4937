"""What kopf watches and keeps (handlers.configure_watching and the in-memory storages).

The behaviour against a real API server — a version leaving the watch once settled, no kopf
annotations, retries still woken — is covered by the e2e suite and counted by the benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from miosa_operator import handlers
from miosa_operator.settings import Settings


def body(kind: str, uid: str = "u1", **extra: Any) -> kopf.Body:
    raw = {
        "apiVersion": "deploy.miosa.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "t", "uid": uid, "labels": {"a": "b"}, "annotations": {"c": "d"}},
        "spec": {"deploymentRef": {"name": "site"}},
        "status": {"state": "building"},
        **extra,
    }
    return kopf.Body(raw)


def test_settled_versions_are_not_watched_and_shards_get_their_range() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_watching(settings, Settings.defaults())
    resource = kopf.Resource("deploy.miosa.io", "v1alpha1", "deploymentversions")
    assert settings.watching.field_selectors.collect(resource) == [
        "status.state!=ready,status.state!=failed,status.state!=archived"
    ]
    assert settings.watching.shard_selectors.collect(resource) == []
    sharded = kopf.OperatorSettings()
    handlers.configure_watching(sharded, Settings.defaults(shards=4, shard_index=1))
    for plural in ("deploymentversions", "deployments"):
        selectors = sharded.watching.shard_selectors.collect(kopf.Resource("deploy.miosa.io", "v1alpha1", plural))
        assert selectors == ["shardRange(object.metadata.uid, '0x4000000000000000', '0x8000000000000000')"]
    namespaces = kopf.Resource("", "v1", "namespaces")
    assert sharded.watching.shard_selectors.collect(namespaces) == []  # offboarding checks ownership itself


def test_a_version_is_one_constant_essence_and_nothing_is_written() -> None:
    essences = handlers.EssencesInMemory()
    version = body("DeploymentVersion")
    assert essences.fetch(body=version) is None  # first sight in this process: a creation
    new = essences.build(body=version)
    assert new == {}
    patch = kopf.Patch()
    essences.store(body=version, patch=patch, essence=new)
    assert not patch
    relabelled = body("DeploymentVersion", metadata={"name": "x", "namespace": "t", "uid": "u1", "labels": {"n": "7"}})
    assert essences.fetch(body=relabelled) == essences.build(body=relabelled)  # an echo: no change
    essences.forget("u1")
    assert essences.fetch(body=version) is None and len(essences) == 0


def test_a_deployment_keeps_its_real_essence_for_updates() -> None:
    essences = handlers.EssencesInMemory()
    deployment = body("Deployment", spec={"promotedVersion": "v1"})
    essence = essences.build(body=deployment)
    assert essence["spec"] == {"promotedVersion": "v1"} and "status" not in essence
    essences.store(body=deployment, patch=kopf.Patch(), essence=essence)
    promoted = body("Deployment", spec={"promotedVersion": "v2"})
    assert essences.fetch(body=promoted) != essences.build(body=promoted)


def test_a_deployments_essence_is_kopfs_without_copying_its_status() -> None:
    """The essence is built from spec, labels and annotations only: the same as kopf's own."""
    essences = handlers.EssencesInMemory()
    annotations = {
        "c": "d",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "kopf.zalando.org/touch-dummy": "x",
    }
    deployment = body(
        "Deployment",
        metadata={"name": "x", "namespace": "t", "uid": "u1", "labels": {"a": "b"}, "annotations": annotations,
                  "managedFields": [{"manager": "m", "fieldsV1": {"f:status": {}}}], "resourceVersion": "7"},
        spec={"promotedVersion": "v1", "promotionPolicy": "Manual"},
        status={"pendingNumbers": {"u2": 3}, "history": [{"version": "v1"}]},
    )  # fmt: skip
    kopfs = super(handlers.EssencesInMemory, essences).build(body=deployment)
    assert essences.build(body=deployment) == kopfs
    assert kopfs == {"spec": {"promotedVersion": "v1", "promotionPolicy": "Manual"},
                     "metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}}  # fmt: skip
    no_annotations = body("Deployment", metadata={"name": "x", "namespace": "t", "uid": "u1"}, spec={"a": 1})
    assert essences.build(body=no_annotations) == super(handlers.EssencesInMemory, essences).build(body=no_annotations)


def test_an_essence_without_kopfs_annotations_is_not_copied_to_be_cleared() -> None:
    progress = handlers.ProgressInMemory()
    plain = kopf.BodyEssence(spec={"a": 1}, metadata={"annotations": {"c": "d"}})
    assert progress.clear(essence=plain) is plain
    touched = kopf.BodyEssence(spec={"a": 1}, metadata={"annotations": {"c": "d", "kopf.zalando.org/touch-dummy": "x"}})
    assert progress.clear(essence=touched) == {"spec": {"a": 1}, "metadata": {"annotations": {"c": "d"}}}
    assert touched["metadata"]["annotations"]["kopf.zalando.org/touch-dummy"] == "x"  # kopf's copy, not ours


def test_progress_lives_in_memory_and_only_a_wake_up_is_written() -> None:
    progress = handlers.ProgressInMemory()
    version = body("DeploymentVersion")
    record = kopf.ProgressRecord(started="2026-01-01T00:00:00", retries=1, delayed="2026-01-01T00:00:01")
    patch = kopf.Patch()
    progress.store(key=kopf.HandlerId("version_lifecycle"), record=record, body=version, patch=patch)
    assert not patch
    assert progress.fetch(key=kopf.HandlerId("version_lifecycle"), body=version)["retries"] == 1
    progress.touch(body=version, patch=patch, value="2026-01-01T00:00:02")  # kopf's wake-up after a delay
    assert patch["metadata"]["annotations"] == {"kopf.zalando.org/touch-dummy": "2026-01-01T00:00:02"}
    progress.purge(key=kopf.HandlerId("version_lifecycle"), body=version, patch=kopf.Patch())
    assert progress.fetch(key=kopf.HandlerId("version_lifecycle"), body=version) is None and len(progress) == 0


def test_field_manager_names_the_shard() -> None:
    assert handlers.field_manager(Settings.defaults().shard) == "miosa-operator"
    assert handlers.field_manager(Settings.defaults(shards=3, shard_index=2).shard) == "miosa-operator-shard-2"


class _Sweeper:
    def __init__(self) -> None:
        self.sweeps = 0

    def sweep(self, **_: Any) -> Any:
        self.sweeps += 1
        raise RuntimeError("counted, then logged by the periodic collector")


def test_singleton_work_sweeps_with_the_one_collector_and_restarts() -> None:
    """The periodic collector sweeps through the collector that also accepts RetentionPolicies
    (``memo.retention``, counted by ``instrument.CountedSweeps``), and starts again after the
    singletons' Lease moved away and back."""
    retention = _Sweeper()
    work = handlers.SingletonWork(Settings.defaults(gc_interval=0.05), retention, offboarding=None, kube=None)  # type: ignore[arg-type]
    assert work.sweeps._inner is retention
    for _ in range(2):
        work.start()
        assert len(work.running) == 2
        deadline = time.monotonic() + 10
        before = retention.sweeps
        while retention.sweeps == before and time.monotonic() < deadline:
            time.sleep(0.01)
        work.stop()
        assert retention.sweeps > before and work.running == []
