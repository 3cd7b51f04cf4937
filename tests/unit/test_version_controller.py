"""VersionController against an in-memory API server (``FakeKube``) and a real ``FileStore``,
driven by the harness in conftest.py (``Env``: reconcile as kopf would, crash by injection).
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from miosa_operator.api import meta
from miosa_operator.api.models import VersionState
from miosa_operator.controllers.common import Retry
from miosa_operator.controllers.ingestion_slots import IngestionSlots, Queued
from miosa_operator.controllers.static_build import MISSING_ARTIFACT_GRACE
from miosa_operator.domain.ids import new_version_id
from miosa_operator.kube.client import Conflict, TransientApiError
from miosa_operator.store import StoreRouter, TransientStoreError

from .conftest import (
    DEP_ID,
    DEPLOYMENTS,
    NS,
    SITE,
    TIMESTAMPED,
    VER_ID,
    VERSIONS,
    Env,
    SimulatedCrash,
    claim_write,
    hashed,
    member,
    ready_condition,
    release_write,
    sha256,
    state,
    states_written,
    tar_gz,
    version_status_write,
)
from .kstatus import kstatus

# =========================================================================== static versions


def test_one_status_write_per_state_change(env: Env) -> None:
    """created (with the number claim), building (with the number), ready: three status writes,
    one label write, one read of the Deployment; the claim's two writes on the Deployment; no
    read of the version (nothing but its claimant numbers it, and this process has not yet)."""
    uri, digest = env.bundle()
    env.deployment("site")
    env.deployment("other")
    env.static_version("other-v1", "other", uri, digest)  # a Deployment's first version also writes its id
    env.run("other-v1")
    env.static_version("site-v1", "site", uri, digest)
    env.run("site-v1")
    env.kube.calls.clear()
    env.static_version("site-v2", "site", uri, digest)

    assert env.controller.reconcile(env.get("site-v2")) == VersionState.READY
    writes = env.kube.status_writes(VERSIONS, "site-v2")
    assert [w.get("state") for w in writes] == ["created", "building", "ready"]
    assert "numberClaim" in writes[0] and writes[1]["versionNumber"] == 2 and writes[1]["numberClaim"] is None
    labels = [c for c in env.kube.calls_to("patch", VERSIONS) if c.args["name"] == "site-v2"]
    assert len(labels) == 1 and labels[0].args["patch"]["metadata"]["labels"][meta.LABEL_VERSION_NUMBER] == "2"
    assert len(env.kube.calls_to("get", DEPLOYMENTS)) == 1
    assert len(env.kube.calls_to("patch_status", DEPLOYMENTS)) == 2  # the claim, its release
    assert not env.kube.calls_to("get", VERSIONS)
    assert env.dep()["status"]["lastVersionNumber"] == 2 and not env.dep()["status"].get("pendingNumbers")


def test_a_drafted_number_is_written_before_the_reconcile_retries(env: Env) -> None:
    """Queued for a slot: the number is written with the queued condition, released, labelled."""
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.controller.slots = IngestionSlots(1, 1, 1 << 40, 50)
    held = env.controller.slots.acquire("elsewhere", "uid-busy", 1)
    assert not isinstance(held, Queued)

    assert isinstance(env.step("site-v1"), Retry)
    version = env.get("site-v1")
    assert version["status"]["versionNumber"] == 1 and version["status"]["state"] == "created"
    assert version["metadata"]["labels"][meta.LABEL_VERSION_NUMBER] == "1"
    assert not env.dep()["status"].get("pendingNumbers")
    assert not env.controller._drafts


def test_static_version_becomes_ready_with_a_verified_canonical_release(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    attribution = {
        "createdBy": "alice@example.com",
        "externalWorkspaceId": "dental-office-123",
        "externalUserId": "dr.smith@clinic.example",
        "externalProjectId": "proj_7",
    }
    created = env.static_version("site-v1", "site", uri, digest, attribution=attribution)

    assert env.controller.reconcile(env.get("site-v1")) == VersionState.READY
    version = env.get("site-v1")
    status, deployment = version["status"], env.dep("site")

    assert status["state"] == "ready"
    assert VER_ID.match(status["id"])
    assert DEP_ID.match(deployment["status"]["id"])
    assert status["deploymentId"] == deployment["status"]["id"]
    assert status["tenantId"] == NS
    assert status["versionNumber"] == 1
    assert deployment["status"]["lastVersionNumber"] == 1 and not deployment["status"].get("pendingNumbers")

    prefix = f"file://{env.releases}/{NS}/{status['deploymentId']}/{status['id']}"
    assert status["artifactUri"] == f"{prefix}/dist.tar.zst"
    canonical = env.path(status["artifactUri"]).read_bytes()
    assert sha256(canonical) == status["artifactSha256"]
    assert status["artifactManifest"] == {
        "files": len(SITE),
        "totalBytes": sum(map(len, SITE.values())),
        "entrypoint": "index.html",
    }
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(canonical))) as tar:
        assert sorted(tar.getnames()) == sorted(SITE)
        assert tar.extractfile("index.html").read() == SITE["index.html"]  # type: ignore[union-attr]

    assert status["buildLogUri"] == f"{prefix}/build.log"
    log_lines = env.path(status["buildLogUri"]).read_text().splitlines()
    assert log_lines and all(TIMESTAMPED.match(line) for line in log_lines), log_lines
    assert any(status["artifactSha256"] in line for line in log_lines)
    assert env.release_files() == [
        f"{NS}/{status['deploymentId']}/{status['id']}/build.log",
        f"{NS}/{status['deploymentId']}/{status['id']}/dist.tar.zst",
    ]

    ready = ready_condition(version)
    assert ready["status"] == "True" and ready["reason"] == "Ready"
    assert ready["observedGeneration"] == created["metadata"]["generation"] == 1
    assert status["observedGeneration"] == 1
    assert status["readyAt"] == "2026-05-14T12:00:00Z"
    assert states_written(env, "site-v1") == ["created", "building", "ready"]
    assert kstatus(version) == "Current"

    labels = version["metadata"]["labels"]
    assert labels == {
        "deploy.miosa.io/deployment": "site",
        "deploy.miosa.io/kind": "static",
        "deploy.miosa.io/version-number": "1",
        "deploy.miosa.io/created-by": hashed("alice@example.com"),
        "deploy.miosa.io/external-workspace-id": "dental-office-123",
        "deploy.miosa.io/external-user-id": hashed("dr.smith@clinic.example"),
        "deploy.miosa.io/external-project-id": "proj_7",
    }
    # The real ids stay in spec; the selector finds the version by its (hashed) labels.
    selector = f"deploy.miosa.io/external-user-id={hashed('dr.smith@clinic.example')}"
    assert [v["metadata"]["name"] for v in env.kube.list(VERSIONS, NS, label_selector=selector)] == ["site-v1"]
    assert version["spec"]["attribution"] == attribution

    assert env.events.recorded == [("Normal", "Ready", "version is ready to be promoted")]


def test_version_waits_in_created_until_its_deployment_exists(env: Env) -> None:
    uri, digest = env.bundle()
    env.static_version("late-v1", "late", uri, digest)

    wait = env.step("late-v1")
    assert isinstance(wait, Retry) and wait.planned
    version = env.get("late-v1")
    assert state(version) == "created" and VER_ID.match(version["status"]["id"])
    assert "versionNumber" not in version["status"]
    ready = ready_condition(version)
    assert (ready["status"], ready["reason"]) == ("False", "DeploymentNotFound")
    assert "late" in ready["message"]
    assert env.events.reasons() == ["DeploymentNotFound"]
    assert version["metadata"]["labels"]["deploy.miosa.io/deployment"] == "late"

    # Waiting again neither rewrites the status nor repeats the event.
    writes = len(env.kube.writes)
    assert isinstance(env.step("late-v1"), Retry)
    assert len(env.kube.writes) == writes and env.events.reasons() == ["DeploymentNotFound"]
    assert env.release_files() == []

    env.deployment("late")
    version = env.run("late-v1")
    assert state(version) == "ready" and version["status"]["versionNumber"] == 1
    assert ready_condition(version)["status"] == "True"
    assert version["status"]["id"] == env.kube.status_writes(VERSIONS, "late-v1")[0]["id"]


def test_bundle_formats_tar_and_tar_zst_are_accepted(env: Env) -> None:
    env.deployment("site")
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        for name, data in SITE.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = plain.getvalue()
    zst = zstandard.ZstdCompressor().compress(raw)
    for name, data in (("v-tar", raw), ("v-zst", zst)):
        env.static_version(name, "site", env.upload(f"{name}.bundle", data), sha256(data))
        status = env.run(name)["status"]
        assert status["state"] == "ready", status
        assert status["artifactManifest"]["files"] == len(SITE)
    # Same content, same canonical bytes, whatever the upload format.
    assert env.get("v-tar")["status"]["artifactSha256"] == env.get("v-zst")["status"]["artifactSha256"]


# =========================================================================== numbering


def test_ten_versions_applied_together_get_1_to_10_once_despite_interleaving_and_conflicts(env: Env) -> None:
    uri, digest = env.bundle()
    names = [f"site-v{i}" for i in range(10)]
    rng = random.Random(20260514)
    # GitOps applies all versions before their Deployment: each waits in created.
    for name in names:
        env.static_version(name, "site", uri, digest)
    for name in rng.sample(names, len(names)):
        assert isinstance(env.step(name), Retry)
    env.deployment("site")

    queue = rng.sample(names, len(names))

    def concurrent_worker(**_: Any) -> None:
        """Between reading the counter and writing it, another worker numbers a version."""
        if queue:
            env.run(queue.pop(0))

    env.kube.inject("patch_status", concurrent_worker, when=claim_write, times=6)
    injected = env.kube.inject("patch_status", Conflict("injected 409", status=409), when=claim_write, nth=12, times=3)
    while queue:
        env.run(queue.pop(0))

    assert env.kube.conflicts >= 1 and injected.fired == 3  # real races and injected ones
    numbers = {name: env.get(name)["status"]["versionNumber"] for name in names}
    assert sorted(numbers.values()) == list(range(1, 11)), numbers
    for name in names:
        version = env.get(name)
        assert state(version) == "ready"
        assert version["metadata"]["labels"]["deploy.miosa.io/version-number"] == str(numbers[name])
        assert version["status"]["deploymentId"] == env.dep()["status"]["id"]
    dep_status = env.dep()["status"]
    assert dep_status["lastVersionNumber"] == 10
    assert not dep_status.get("pendingNumbers")
    # Only one Deployment id was ever assigned, even though every claim raced for it.
    assert len({w["id"] for w in env.kube.status_writes(DEPLOYMENTS, "site") if "id" in w}) == 1


def test_ten_versions_reconciled_by_parallel_workers_are_gapless(tmp_path: Path) -> None:
    env = Env(tmp_path, max_concurrent_ingestions=10, tenant_max_ingestions=10)  # only numbering is under test
    uri, digest = env.bundle()
    env.deployment("site")
    names = [f"site-v{i}" for i in range(10)]
    for name in names:
        env.static_version(name, "site", uri, digest)
    # Widen the window between reading the counter and the compare-and-swap.
    env.kube.inject("patch_status", lambda **_: time.sleep(0.003), when=claim_write, times=None)
    barrier = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            barrier.wait()
            env.run(name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(env.get(n)["status"]["versionNumber"] for n in names) == list(range(1, 11))
    assert env.kube.conflicts >= 1
    assert env.dep()["status"]["lastVersionNumber"] == 10 and not env.dep()["status"].get("pendingNumbers")


def test_a_body_older_than_the_numbers_write_never_claims_a_second_number(env: Env) -> None:
    """kopf may hand over a body from before the operator's own write of the number (its event
    still on the way): a second claim would be refused by the CRD (assigned once) and lost."""
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.controller.slots = IngestionSlots(1, 1, 1 << 40, 50)
    assert not isinstance(env.controller.slots.acquire("elsewhere", "uid-busy", 1), Queued)
    assert isinstance(env.step("site-v1"), Retry)  # numbered, then queued
    stale = env.get("site-v1")
    number_claim = {"number": 1, "deploymentUid": env.dep()["metadata"]["uid"]}
    stale["status"] = {**stale["status"], "numberClaim": number_claim}
    del stale["status"]["versionNumber"], stale["status"]["deploymentId"]

    env.kube.calls.clear()
    with pytest.raises(Retry):
        env.controller.reconcile(stale)
    assert len(env.kube.calls_to("get", VERSIONS)) == 1  # this process numbered it: read before claiming
    assert env.get("site-v1")["status"]["versionNumber"] == 1
    assert env.dep()["status"]["lastVersionNumber"] == 1 and not env.dep()["status"].get("pendingNumbers")
    env.static_version("site-v2", "site", uri, digest)
    env.controller.slots = IngestionSlots(4, 4, 1 << 40, 50)
    assert env.run("site-v2")["status"]["versionNumber"] == 2


def test_crash_after_claiming_a_number_reuses_it_without_a_gap(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    first = env.static_version("site-v1", "site", uri, digest)
    env.static_version("site-v2", "site", uri, digest)
    crash = env.kube.inject("patch_status", SimulatedCrash("killed"), when=version_status_write("versionNumber"))

    with pytest.raises(SimulatedCrash):
        env.step("site-v1")
    assert crash.fired == 1
    dep_status = env.dep()["status"]
    assert dep_status["lastVersionNumber"] == 1
    assert dep_status["pendingNumbers"] == {first["metadata"]["uid"]: 1}
    assert "versionNumber" not in env.get("site-v1")["status"]

    # Another version is numbered meanwhile; it must not take the claimed number.
    assert env.run("site-v2")["status"]["versionNumber"] == 2
    assert env.dep()["status"]["pendingNumbers"] == {first["metadata"]["uid"]: 1}

    # The restarted operator finds its claim and reuses it.
    assert env.run("site-v1")["status"]["versionNumber"] == 1
    dep_status = env.dep()["status"]
    assert dep_status["lastVersionNumber"] == 2
    assert not dep_status.get("pendingNumbers")


def test_crash_after_numbering_before_releasing_the_claim_does_not_leak_it(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.kube.inject("patch_status", SimulatedCrash("killed"), when=release_write)

    with pytest.raises(SimulatedCrash):
        env.step("site-v1")
    assert env.get("site-v1")["status"]["versionNumber"] == 1
    assert env.dep()["status"]["pendingNumbers"]  # the claim is still recorded

    version = env.run("site-v1")
    assert state(version) == "ready" and version["status"]["versionNumber"] == 1
    assert not env.dep()["status"].get("pendingNumbers")
    env.static_version("site-v2", "site", uri, digest)
    assert env.run("site-v2")["status"]["versionNumber"] == 2


def test_endless_contention_on_the_counter_is_a_retry_not_a_failure(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.kube.inject("patch_status", Conflict("always", status=409), when=claim_write, times=None)

    wait = env.step("site-v1")
    assert isinstance(wait, Retry) and not wait.planned
    assert state(env.get("site-v1")) == "created"
    env.kube.injections.clear()
    assert env.run("site-v1")["status"]["versionNumber"] == 1


# =========================================================================== crashes and idempotence


def test_crash_after_storing_the_release_keeps_the_stored_object(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.kube.inject("patch_status", SimulatedCrash("killed"), when=version_status_write("state", "ready"))

    with pytest.raises(SimulatedCrash):
        env.step("site-v1")
    version = env.get("site-v1")
    assert state(version) == "building"
    status = version["status"]
    release = env.releases / NS / status["deploymentId"] / status["id"] / "dist.tar.zst"
    log = release.with_name("build.log")
    before_bytes, before = release.read_bytes(), os.stat(release)
    log_before = log.read_bytes()

    env.clock.advance(30)
    version = env.run("site-v1")
    after = os.stat(release)
    assert state(version) == "ready"
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert release.read_bytes() == before_bytes
    assert version["status"]["artifactSha256"] == sha256(before_bytes)
    assert version["status"]["artifactUri"] == f"file://{release}"
    assert log.read_bytes() == log_before  # the build log is write-once too
    assert sorted(p.name for p in release.parent.iterdir()) == ["build.log", "dist.tar.zst"]  # no temp files left


def test_reconciling_a_finished_version_writes_nothing(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("good", "site", uri, digest)
    env.static_version("bad", "site", uri, "0" * 64)
    assert state(env.run("good")) == "ready"
    assert state(env.run("bad")) == "failed"
    writes, events, files = len(env.kube.writes), len(env.events.events), env.release_files()

    env.clock.advance(3600)
    for _ in range(3):
        assert env.controller.reconcile(env.get("good")) == VersionState.READY
        assert env.controller.reconcile(env.get("bad")) == VersionState.FAILED
    env.kube.patch_status(VERSIONS, NS, "good", {"state": "archived"})
    writes += 1
    assert env.controller.reconcile(env.get("good")) == VersionState.ARCHIVED

    assert len(env.kube.writes) == writes
    assert len(env.events.events) == events
    assert env.release_files() == files
    assert not env.kube.calls_to("create_workload") and not env.kube.calls_to("create_object")


# =========================================================================== static failures


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (member("evil", tarfile.SYMTYPE, "/etc/passwd"), "UnsafeMemberType"),
        (member("hard", tarfile.LNKTYPE, "index.html"), "UnsafeMemberType"),
        (member("dev", tarfile.CHRTYPE), "UnsafeMemberType"),
        (member("../escape.html", tarfile.DIRTYPE), "UnsafePath"),
    ],
    ids=["symlink", "hardlink", "device", "dotdot"],
)
def test_hostile_bundle_fails_with_its_reason_and_only_a_build_log(env: Env, extra: tarfile.TarInfo, reason: str) -> None:
    data = tar_gz(SITE, extra=[extra])
    env.deployment("site")
    env.static_version("site-v1", "site", env.upload("hostile.tar.gz", data), sha256(data))

    assert env.controller.reconcile(env.get("site-v1")) == VersionState.FAILED
    version = env.get("site-v1")
    status = version["status"]
    assert status["state"] == "failed"
    ready = ready_condition(version)
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert kstatus(version) == "Failed"  # Stalled: Flux and Argo CD report the failure
    assert "artifactUri" not in status and "artifactSha256" not in status and "readyAt" not in status
    log_rel = f"{NS}/{status['deploymentId']}/{status['id']}/build.log"
    assert status["buildLogUri"] == f"file://{env.releases}/{log_rel}"
    assert env.release_files() == [log_rel]  # nothing else under releases
    log = (env.releases / log_rel).read_text()
    assert f"FAILED {reason}" in log
    assert states_written(env, "site-v1") == ["created", "building", "failed"]
    assert [(e.type, e.reason) for e in env.events.events] == [("Warning", reason)]
    # failed is terminal
    assert env.controller.reconcile(env.get("site-v1")) == VersionState.FAILED


def test_checksum_mismatch_fails(env: Env) -> None:
    uri, digest = env.bundle()
    wrong = sha256(b"something else")
    env.deployment("site")
    env.static_version("site-v1", "site", uri, wrong)

    version = env.run("site-v1")
    assert state(version) == "failed"
    ready = ready_condition(version)
    assert ready["reason"] == "ChecksumMismatch" and wrong in ready["message"]
    assert digest not in ready["message"]  # never the actual digest: it would make the object servable
    assert digest not in env.path(version["status"]["buildLogUri"]).read_text()
    assert not any(f.endswith("dist.tar.zst") for f in env.release_files())
    assert env.path(version["status"]["buildLogUri"]).exists()
    assert env.events.reasons() == ["ChecksumMismatch"]


def test_bundle_over_the_limits_fails(tmp_path: Path) -> None:
    env = Env(tmp_path, max_members=2)
    uri, digest = env.bundle()  # three files
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    assert ready_condition(env.run("site-v1"))["reason"] == "TooManyMembers"


def test_missing_entrypoint_fails(env: Env) -> None:
    uri, digest = env.bundle(files={"about.html": b"about"})
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    assert ready_condition(env.run("site-v1"))["reason"] == "MissingEntrypoint"


def test_missing_source_artifact_waits_for_the_grace_period_then_fails(env: Env) -> None:
    env.deployment("site")
    missing = f"file://{env.uploads}/{NS}/not-yet.tar.gz"
    env.static_version("site-v1", "site", missing, "a" * 64)

    wait = env.step("site-v1")
    assert isinstance(wait, Retry)
    waiting = env.get("site-v1")
    assert state(waiting) == "created"  # nothing started: it waits for the upload
    assert (ready_condition(waiting)["reason"], kstatus(waiting)) == ("ArtifactPending", "InProgress")
    env.clock.advance(MISSING_ARTIFACT_GRACE - timedelta(seconds=1))
    assert isinstance(env.step("site-v1"), Retry)
    assert env.release_files() == [] and env.events.reasons() == []

    env.clock.advance(timedelta(seconds=2))
    assert env.step("site-v1") == VersionState.FAILED
    version = env.get("site-v1")
    ready = ready_condition(version)
    assert (ready["status"], ready["reason"]) == ("False", "ArtifactNotFound")
    assert missing in ready["message"]
    assert "FAILED ArtifactNotFound" in env.path(version["status"]["buildLogUri"]).read_text()
    assert [(e.type, e.reason) for e in env.events.events] == [("Warning", "ArtifactNotFound")]


def test_artifact_uploaded_within_the_grace_period_is_used(env: Env) -> None:
    env.deployment("site")
    data = tar_gz(SITE)
    target = f"file://{env.uploads}/{NS}/slow.tar.gz"
    env.static_version("site-v1", "site", target, sha256(data))
    assert isinstance(env.step("site-v1"), Retry)
    env.clock.advance(60)
    env.upload("slow.tar.gz", data)
    assert state(env.run("site-v1")) == "ready"


def test_static_version_of_a_dynamic_deployment_fails_with_kind_mismatch(env: Env) -> None:
    uri, digest = env.bundle()
    env.deployment("api", kind="dynamic")
    env.static_version("api-v1", "api", uri, digest)

    version = env.run("api-v1")
    assert state(version) == "failed"
    ready = ready_condition(version)
    assert ready["reason"] == "KindMismatch" and "'static'" in ready["message"] and "'dynamic'" in ready["message"]
    assert env.release_files() == []
    assert env.events.reasons() == ["KindMismatch"]


def test_dynamic_version_of_a_static_deployment_fails_with_kind_mismatch(env: Env) -> None:
    env.deployment("site")
    env.dynamic_version("site-v1", "site")
    assert ready_condition(env.run("site-v1"))["reason"] == "KindMismatch"
    assert not env.kube.calls_to("create_workload") and not env.kube.calls_to("create_object")


# =========================================================================== dynamic versions (more in test_health_gate.py)


def test_dynamic_version_with_duplicate_env_names_fails_as_invalid_runtime(env: Env) -> None:
    env.deployment("api", kind="dynamic")
    env.dynamic_version("api-v1", "api", env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])

    assert env.step("api-v1") == VersionState.FAILED
    ready = ready_condition(env.get("api-v1"))
    assert ready["reason"] == "InvalidRuntime" and "A" in ready["message"]
    assert not env.kube.calls_to("create_workload") and not env.kube.calls_to("create_object")


# =========================================================================== transient errors


TRANSIENT_POINTS = {
    "read-deployment": ("get", lambda plural, **_: plural == DEPLOYMENTS),
    "identity": ("patch_status", version_status_write("id")),
    "labels": ("patch", lambda plural, **_: plural == VERSIONS),
    "claim": ("patch_status", claim_write),
    "number": ("patch_status", version_status_write("versionNumber")),
    "release-claim": ("patch_status", release_write),
    "building": ("patch_status", version_status_write("state", "building")),
    "ready": ("patch_status", version_status_write("state", "ready")),
}


@pytest.mark.parametrize("point", sorted(TRANSIENT_POINTS))
def test_transient_api_error_propagates_and_a_later_reconcile_finishes(env: Env, point: str) -> None:
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    method, when = TRANSIENT_POINTS[point]
    injected = env.kube.inject(method, TransientApiError("503 Service Unavailable", status=503), when=when)

    with pytest.raises(TransientApiError):
        env.controller.reconcile(env.get("site-v1"))
    assert injected.fired == 1
    assert state(env.get("site-v1")) in (None, "created", "building")
    assert not [e for e in env.events.events if e.type == "Warning"]

    version = env.run("site-v1")
    assert state(version) == "ready"
    assert version["status"]["versionNumber"] == 1
    assert sha256(env.path(version["status"]["artifactUri"]).read_bytes()) == version["status"]["artifactSha256"]
    dep_status = env.dep()["status"]
    assert dep_status["lastVersionNumber"] == 1 and not dep_status.get("pendingNumbers")


class FlakyStore:
    """The real store, but the first ``fail`` writes time out."""

    def __init__(self, inner: StoreRouter, fail: int = 1) -> None:
        self.inner, self.fail = inner, fail

    def put_if_absent(self, uri: str, source: Any, size: int | None = None, content_type: str = "") -> bool:
        if self.fail:
            self.fail -= 1
            raise TransientStoreError(f"PUT {uri}: timed out")
        return self.inner.put_if_absent(uri, source, size=size, content_type=content_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_transient_store_error_is_a_retry_not_a_failure(env: Env) -> None:
    env.controller = env.operator(env.run_id, store=FlakyStore(env.store))
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)

    wait = env.step("site-v1")
    assert isinstance(wait, Retry) and not wait.planned
    assert state(env.get("site-v1")) == "building"
    assert env.release_files() == []
    assert state(env.run("site-v1")) == "ready"


def test_clock_is_the_injected_one(env: Env) -> None:
    env.clock.set(datetime.fromisoformat("2030-01-02T03:04:05+00:00"))
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    version = env.run("site-v1")
    assert version["status"]["readyAt"] == "2030-01-02T03:04:05Z"
    assert ready_condition(version)["lastTransitionTime"] == "2030-01-02T03:04:05Z"
    assert env.path(version["status"]["buildLogUri"]).read_text().startswith("2030-01-02T03:04:05.000Z  ")


class SignalledIngestion:
    """An in-process ingestion that says it started and counts its calls; ``held`` ones wait
    for ``go`` before they ingest."""

    def __init__(self, held: bool = False) -> None:
        self.go, self.started, self.calls = threading.Event(), threading.Event(), 0
        if not held:
            self.go.set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from miosa_operator.controllers.static_build import in_process

        self.calls += 1
        self.started.set()
        assert self.go.wait(10)
        return in_process(*args, **kwargs)

    def release_soon(self) -> None:
        threading.Timer(0.2, self.go.set).start()


def test_the_claims_release_and_the_labels_overlap_the_ingestion(tmp_path: Path) -> None:
    """They follow the write of the number, not the ingestion: off the path to ready."""
    ingest = SignalledIngestion()
    overlapped: list[bool] = []
    env = Env(tmp_path, ingest=ingest)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    env.kube.inject("patch", lambda **_: overlapped.append(ingest.started.wait(5)), when=lambda plural, **_: plural == VERSIONS)
    version = env.run("site-v1")
    assert overlapped == [True]  # the labels were written while the bundle was being ingested
    assert version["status"]["state"] == "ready" and version["metadata"]["labels"][meta.LABEL_VERSION_NUMBER] == "1"
    assert not env.dep()["status"].get("pendingNumbers")


class HeadSignals:
    """A store whose HEAD says that it started."""

    def __init__(self, inner: StoreRouter) -> None:
        self.inner, self.heading = inner, threading.Event()

    def head(self, uri: str) -> Any:
        self.heading.set()
        return self.inner.head(uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_reads_after_the_deployments_overlap_it_and_the_number_claim(tmp_path: Path) -> None:
    """The unnumbered versions are listed while the Deployment is read, and the bundle's HEAD
    runs while the number is claimed: each waits below for the other, which sequential code
    would never start (the waits then time out: False)."""
    env = Env(tmp_path, number_order_patience=10.0)
    store = HeadSignals(env.store)
    env.controller = env.operator(env.run_id, store=store)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    listed, overlapped = threading.Event(), []
    env.kube.inject("list", lambda **_: listed.set(), when=lambda plural, **_: plural == VERSIONS)
    env.kube.inject("get", lambda **_: overlapped.append(listed.wait(5)), when=lambda plural, **_: plural == DEPLOYMENTS)
    claim = lambda **_: overlapped.append(store.heading.wait(5))  # noqa: E731
    env.kube.inject("patch_status", claim, when=lambda plural, **_: plural == DEPLOYMENTS)
    version = env.run("site-v1")
    assert overlapped == [True, True]
    assert version["status"]["state"] == "ready" and version["status"]["versionNumber"] == 1


def test_a_version_waiting_for_its_deployment_reads_nothing_ahead(env: Env) -> None:
    """Polled until the Deployment exists: no LIST and no HEAD per poll (a tenant's orphans
    would otherwise cost the API server and the store one of each per second)."""
    store = HeadSignals(env.store)
    env.controller = env.operator(env.run_id, store=store)
    uri, digest = env.bundle()
    env.static_version("site-v1", "site", uri, digest)
    assert isinstance(env.step("site-v1"), Retry)  # DeploymentNotFound written (read ahead once, as for any version)
    store.heading.clear()
    listed = env.kube.inject("list", lambda **_: None, when=lambda plural, **_: plural == VERSIONS)
    for _ in range(3):
        assert isinstance(env.step("site-v1"), Retry)
    assert not store.heading.is_set() and listed.seen == 0


def test_a_new_versions_bundle_is_verified_while_its_number_is_claimed(tmp_path: Path) -> None:
    """The claim on the Deployment waits below for the ingestion to start, which sequential
    code starts only after it (the wait then times out: False). Nothing is stored before the
    attempt is recorded."""
    ingest, overlapped = SignalledIngestion(), []
    env = Env(tmp_path, ingest=ingest)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    claim = lambda **_: overlapped.append(ingest.started.wait(5))  # noqa: E731
    env.kube.inject("patch_status", claim, when=lambda plural, **_: plural == DEPLOYMENTS)
    building_first = lambda **_: overlapped.append(env.release_files() == [])  # noqa: E731
    env.kube.inject(
        "patch_status", building_first, when=lambda plural, status, **_: plural == VERSIONS and "buildAttempts" in status
    )
    version = env.run("site-v1")
    assert overlapped == [True, True]
    assert version["status"]["state"] == "ready" and version["status"]["versionNumber"] == 1
    assert env.controller.slots.running() == {}


def a_version_whose_verification_is_held(tmp_path: Path) -> tuple[Env, SignalledIngestion]:
    """``site-v1`` of Deployment ``site``, whose bundle's verification waits for ``release_soon``."""
    ingest = SignalledIngestion(held=True)
    env = Env(tmp_path, ingest=ingest)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-v1", "site", uri, digest)
    return env, ingest


def test_a_verification_abandoned_by_its_reconcile_is_adopted_by_the_next(tmp_path: Path) -> None:
    env, ingest = a_version_whose_verification_is_held(tmp_path)
    env.kube.inject("patch_status", TransientApiError("etcd leader changed"), when=lambda plural, **_: plural == DEPLOYMENTS)
    with pytest.raises(TransientApiError):
        env.step("site-v1")  # the number claim failed while the bundle was being verified
    assert env.controller.slots.running() == {NS: 1} and env.release_files() == []  # its slot, nothing stored
    assert state(env.get("site-v1")) == "created"
    ingest.release_soon()
    version = env.run("site-v1")
    assert version["status"]["state"] == "ready" and version["status"]["versionNumber"] == 1
    assert ingest.calls == 1 and env.controller.slots.running() == {}  # adopted, not verified twice


def test_an_abandoned_verification_of_another_identity_ends_before_the_version_starts_again(tmp_path: Path) -> None:
    env, ingest = a_version_whose_verification_is_held(tmp_path)
    env.kube.inject("patch_status", TransientApiError("timeout"), when=lambda plural, **_: plural == VERSIONS)
    with pytest.raises(TransientApiError):
        env.step("site-v1")  # the identity was never written
    other = new_version_id()  # ... and another writer (a shard before a resharding) gives it one
    env.kube.patch_status(VERSIONS, NS, "site-v1", {"id": other, "tenantId": NS, "state": "created"})
    wait = env.step("site-v1")
    assert ingest.started.wait(5)
    assert isinstance(wait, Retry) and "still running" in str(wait) and ingest.calls == 1
    ingest.go.set()
    deadline = time.monotonic() + 5
    while env.controller.slots.running() and time.monotonic() < deadline:  # it ends; its slot comes back
        time.sleep(0.01)
    assert env.controller.slots.running() == {} and env.release_files() == []
    version = env.run("site-v1")
    assert version["status"]["state"] == "ready" and ingest.calls == 2


def test_a_version_whose_identity_write_failed_keeps_its_id_and_its_verification(tmp_path: Path) -> None:
    env, ingest = a_version_whose_verification_is_held(tmp_path)
    env.kube.inject("patch_status", TransientApiError("timeout"), when=lambda plural, **_: plural == VERSIONS)
    with pytest.raises(TransientApiError):
        env.step("site-v1")  # the identity was never written; the bundle is being verified under it
    assert ingest.started.wait(5)
    ingest.release_soon()
    version = env.run("site-v1")
    assert version["status"]["state"] == "ready" and ingest.calls == 1  # adopted: the same id
    log = env.path(version["status"]["buildLogUri"]).read_text()
    assert f"({version['status']['id']})" in log.splitlines()[0]


def test_no_verification_ahead_while_an_earlier_version_waits_for_its_number(tmp_path: Path) -> None:
    """It would be abandoned at every poll of the numbering order; nor a HEAD per poll."""
    ingest = SignalledIngestion()
    env = Env(tmp_path, ingest=ingest, number_order_patience=10.0)
    store = HeadSignals(env.store)
    env.controller = env.operator(env.run_id, ingest, store=store)
    uri, digest = env.bundle()
    env.deployment("site")
    env.static_version("site-a", "site", uri, digest)
    env.clock.advance(1)
    env.static_version("site-b", "site", uri, digest)
    for _ in range(3):
        assert isinstance(env.step("site-b"), Retry)  # numbering after site-a
    assert ingest.calls == 0 and env.controller.slots.running() == {} and not store.heading.is_set()


def test_numbers_follow_creation_order_within_the_patience(tmp_path: Path) -> None:
    env = Env(tmp_path, number_order_patience=10.0)
    env.deployment()
    uri, digest = env.bundle()
    for name in ("site-a", "site-b", "site-c"):
        env.static_version(name, "site", uri, digest)
        env.clock.advance(1)
    # Processed newest first, each waits for the older ones (kopf retries it shortly).
    for name in ("site-c", "site-b"):
        with pytest.raises(Retry, match="earlier version site-a"):
            env.controller.reconcile(env.get(name))
    for name in ("site-a", "site-b", "site-c"):
        env.run(name)
    assert [env.get(n)["status"]["versionNumber"] for n in ("site-a", "site-b", "site-c")] == [1, 2, 3]


def test_waiting_for_earlier_versions_reads_only_unnumbered_ones(tmp_path: Path) -> None:
    """A long history is not listed for every new version: numbered versions are labelled."""
    env = Env(tmp_path, number_order_patience=10.0)
    env.deployment()
    uri, digest = env.bundle()
    for name in ("site-a", "site-b"):
        env.static_version(name, "site", uri, digest)
        env.run(name)
    env.static_version("site-c", "site", uri, digest)
    env.kube.calls.clear()
    env.run("site-c")
    (listing,) = [c for c in env.kube.calls_to("list", meta.VERSION_PLURAL) if c.args.get("label_selector")]
    assert listing.args["label_selector"] == f"!{meta.LABEL_VERSION_NUMBER}"
    assert env.get("site-a")["metadata"]["labels"][meta.LABEL_VERSION_NUMBER] == "1"  # what excludes it
    assert env.get("site-c")["status"]["versionNumber"] == 3


def test_an_earlier_version_that_makes_no_progress_delays_numbering_only_boundedly(tmp_path: Path) -> None:
    env = Env(tmp_path, number_order_patience=10.0)
    env.deployment()
    uri, digest = env.bundle()
    env.static_version("a-stuck", "site", uri, digest)
    env.static_version("b-later", "site", uri, digest)  # same second: the name breaks the tie
    with pytest.raises(Retry):
        env.controller.reconcile(env.get("b-later"))
    env.clock.advance(11)
    assert env.run("b-later")["status"]["versionNumber"] == 1
