"""DeploymentVersion end to end: the real API server, the real S3 server, the real operator."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import RELEASES_BUCKET, UPLOADS_BUCKET, Environment, OperatorProcess
from .helpers import Objects, condition, dynamic_spec, sha256, static_spec, tar_gz, wait_until

SITE = {"index.html": b"<h1>hello</h1>", "css/site.css": b"body{}", "img/logo.svg": b"<svg/>"}
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\s+\S")


def upload(env: Environment, key: str, data: bytes) -> str:
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=data)
    return f"s3://{UPLOADS_BUCKET}/{key}"


def read_s3(env: Environment, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return env.s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def release_keys(env: Environment, namespace: str) -> list[str]:
    pages = env.s3().get_paginator("list_objects_v2").paginate(Bucket=RELEASES_BUCKET, Prefix=f"{namespace}/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def test_static_version_becomes_ready_with_verified_release(
    env: Environment, objects: Objects, namespace: str, s3_prefix: str
) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}site.tar.gz", bundle)
    objects.create_deployment("site")
    objects.create_version(
        "site-v1",
        static_spec(
            "site",
            uri,
            sha256(bundle),
            attribution={"externalWorkspaceId": "dental-office-123", "externalUserId": "dr.smith@clinic.example"},
        ),
    )
    version = objects.wait_state("site-v1", "ready", "failed")
    status = version["status"]
    assert status["state"] == "ready", status
    deployment = objects.deployment("site")
    assert re.match(r"^ver_[0-9A-Z]{26}$", status["id"])
    assert status["deploymentId"] == deployment["status"]["id"]
    assert status["tenantId"] == namespace and status["versionNumber"] == 1
    assert status["artifactUri"] == f"s3://{RELEASES_BUCKET}/{namespace}/{status['deploymentId']}/{status['id']}/dist.tar.zst"
    assert sha256(read_s3(env, status["artifactUri"])) == status["artifactSha256"]
    assert status["artifactManifest"] == {"files": 3, "totalBytes": sum(map(len, SITE.values())), "entrypoint": "index.html"}
    log_lines = read_s3(env, status["buildLogUri"]).decode().splitlines()
    assert log_lines and all(TIMESTAMPED.match(line) for line in log_lines), log_lines
    ready = condition(version, "Ready")
    assert ready and ready["status"] == "True" and ready["observedGeneration"] == version["metadata"]["generation"]
    assert version["status"]["conditions"][0]["type"] == "Ready"
    assert status["readyAt"]
    labels = version["metadata"]["labels"]
    assert labels["deploy.miosa.io/deployment"] == "site"
    assert labels["deploy.miosa.io/external-workspace-id"] == "dental-office-123"
    assert labels["deploy.miosa.io/external-user-id"].startswith("h-")
    assert [v["metadata"]["name"] for v in objects.versions("deploy.miosa.io/external-workspace-id=dental-office-123")] == [
        "site-v1"
    ]
    # kubectl wait works on the Ready condition.
    env.kubectl("-n", namespace, "wait", "--for=condition=Ready", "dver/site-v1", "--timeout=10s")


def test_dynamic_version_passes_health_gate_and_cleans_up(api: client.ApiClient, objects: Objects, namespace: str) -> None:
    objects.create_deployment("api", kind="dynamic")
    objects.create_version("api-v1", dynamic_spec("api", env=[{"name": "MODE", "value": "prod"}]))
    version = objects.wait_state("api-v1", "ready", "failed", timeout=120)
    assert version["status"]["state"] == "ready", version["status"]
    assert condition(version, "Ready")["status"] == "True"
    apps = client.AppsV1Api(api)
    wait_until(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=30, what="verification workload removed")


def test_dynamic_version_that_never_becomes_healthy_fails(api: client.ApiClient, objects: Objects, namespace: str) -> None:
    # kwok runs this image's pod but its readiness probe never passes (hack/kwok-faults.yaml).
    objects.create_deployment("api", kind="dynamic")
    objects.create_version("api-v1", dynamic_spec("api", image="kwok.invalid/never-ready:1"))
    version = objects.wait_state("api-v1", "ready", "failed", timeout=120)
    assert version["status"]["state"] == "failed"
    ready = condition(version, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "HealthCheckFailed"
    assert "/healthz" in ready["message"] and "readiness probe failing" in ready["message"]
    apps = client.AppsV1Api(api)
    wait_until(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=30, what="verification workload removed")
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    assert any(e.reason == "HealthCheckFailed" and e.type == "Warning" for e in events)


def test_version_waits_in_created_until_its_deployment_exists(env: Environment, objects: Objects, s3_prefix: str) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}late.tar.gz", bundle)
    objects.create_version("late-v1", static_spec("late", uri, sha256(bundle)))

    def waiting() -> bool:
        obj = objects.version("late-v1")
        ready = condition(obj, "Ready")
        return obj.get("status", {}).get("state") == "created" and bool(ready) and ready["reason"] == "DeploymentNotFound"

    wait_until(waiting, timeout=30, what="created with DeploymentNotFound")
    objects.create_deployment("late")
    assert objects.wait_state("late-v1", "ready", "failed")["status"]["state"] == "ready"


def test_spec_is_immutable(env: Environment, objects: Objects, s3_prefix: str) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}s.tar.gz", bundle)
    objects.create_deployment("site")
    objects.create_version("site-v1", static_spec("site", uri, sha256(bundle)))
    with pytest.raises(ApiException) as caught:
        objects.patch_version("site-v1", {"spec": {"artifact": {"sha256": "f" * 64}}})
    assert caught.value.status == 422
    assert "spec is immutable" in caught.value.body


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            dynamic_spec("d") | {"kind": "static", "artifact": {"uri": "s3://miosa-uploads/x.tar", "sha256": "a" * 64}},
            "spec.runtime is forbidden when spec.kind is static",
        ),
        ({"deploymentRef": {"name": "d"}, "kind": "dynamic"}, "spec.runtime is required when spec.kind is dynamic"),
        ({"deploymentRef": {"name": "d"}, "kind": "static"}, "spec.artifact is required when spec.kind is static"),
        (static_spec("d", "s3://miosa-uploads/x.tar", "ABC"), "spec.artifact.sha256"),
        (static_spec("d", "http://example.com/x.tar", "a" * 64), "spec.artifact.uri"),
    ],
)
def test_invalid_specs_are_rejected_by_the_api_server(objects: Objects, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiException) as caught:
        objects.create_version("bad", spec)
    assert caught.value.status == 422
    assert message in caught.value.body


def test_status_cannot_regress(env: Environment, objects: Objects, s3_prefix: str) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}s.tar.gz", bundle)
    objects.create_deployment("site")
    objects.create_version("site-v1", static_spec("site", uri, sha256(bundle)))
    objects.wait_state("site-v1", "ready")
    for bad in ("building", "failed", "created"):
        with pytest.raises(ApiException) as caught:
            objects.patch_version_status("site-v1", {"state": bad})
        assert caught.value.status == 422
        assert f"status.state cannot move to {bad}" in caught.value.body
    with pytest.raises(ApiException) as caught:
        objects.patch_version_status("site-v1", {"versionNumber": 99})
    assert caught.value.status == 422 and "versionNumber is assigned once" in caught.value.body


def test_first_state_must_be_created(objects: Objects, operator: OperatorProcess, api: client.ApiClient) -> None:
    objects.create_version("orphan", dynamic_spec("nobody-has-this-deployment"))
    # The operator writes `created` first; a status that starts elsewhere is refused.
    custom = client.CustomObjectsApi(api)
    body = custom.get_namespaced_custom_object("deploy.miosa.io", "v1alpha1", objects.namespace, "deploymentversions", "orphan")
    if not body.get("status"):
        with pytest.raises(ApiException) as caught:
            objects.patch_version_status("orphan", {"state": "ready"})
        assert caught.value.status == 422 and "status.state cannot move to ready" in caught.value.body
    objects.wait_state("orphan", "created")


def test_thirty_concurrent_versions_get_numbers_one_to_thirty(env: Environment, objects: Objects, s3_prefix: str) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}s.tar.gz", bundle)
    objects.create_deployment("busy")
    versions = objects.create_versions_at_once([f"busy-{i:02d}" for i in range(30)], static_spec("busy", uri, sha256(bundle)))
    assert sorted(v["status"]["versionNumber"] for v in versions) == list(range(1, 31))
    assert objects.status_once_claims_are_released("busy")["lastVersionNumber"] == 30


def test_operator_killed_during_ingestion_recovers(
    env: Environment, objects: Objects, operator: OperatorProcess, namespace: str, s3_prefix: str
) -> None:
    # A bundle big enough that ingestion takes a while on this machine.
    big = {"index.html": b"<h1>big</h1>", **{f"blob/{i}.bin": os.urandom(8 << 20) for i in range(24)}}
    bundle = tar_gz(big)
    uri = upload(env, f"{s3_prefix}big.tar.gz", bundle)
    objects.create_deployment("big")
    objects.create_version("big-v1", static_spec("big", uri, sha256(bundle)))
    objects.wait_state("big-v1", "building", timeout=60)
    operator.kill()  # SIGKILL in the middle of the ingestion
    assert objects.version("big-v1")["status"]["state"] == "building"
    operator.start()
    version = objects.wait_state("big-v1", "ready", "failed", timeout=300)
    assert version["status"]["state"] == "ready", operator.tail()
    status = version["status"]
    prefix = f"{namespace}/{status['deploymentId']}/{status['id']}/"
    assert release_keys(env, namespace) == [prefix + "build.log", prefix + "dist.tar.zst"]
    assert sha256(read_s3(env, status["artifactUri"])) == status["artifactSha256"]
    assert status["artifactManifest"]["files"] == 25


def test_claims_a_killed_operator_still_owed_are_released_when_it_starts_again(
    env: Environment, objects: Objects, operator: OperatorProcess, s3_prefix: str
) -> None:
    """A recorded claim waits a few seconds to ride on the next claim (``claim_releases``);
    an operator killed meanwhile leaves it in pendingNumbers, and the next one drops it."""
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}s.tar.gz", bundle)
    objects.create_deployment("quiet")
    objects.create_version("quiet-v1", static_spec("quiet", uri, sha256(bundle)))
    version = objects.wait_state("quiet-v1", "ready", timeout=60)
    operator.kill()  # within the release delay (3 s) of the number
    assert objects.deployment("quiet")["status"].get("pendingNumbers") == {version["metadata"]["uid"]: 1}
    operator.start()
    assert objects.status_once_claims_are_released("quiet", timeout=60)["lastVersionNumber"] == 1


@pytest.mark.parametrize(
    ("name", "files", "reason"),
    [
        ("traversal", {"index.html": b"x", "../../escape.txt": b"owned"}, "UnsafePath"),
        ("noentry", {"about.html": b"x"}, "MissingEntrypoint"),
    ],
)
def test_hostile_bundle_fails_and_writes_nothing_outside_its_prefix(
    env: Environment, objects: Objects, namespace: str, s3_prefix: str, name: str, files: dict[str, bytes], reason: str
) -> None:
    bundle = tar_gz(files)
    uri = upload(env, f"{s3_prefix}{name}.tar.gz", bundle)
    objects.create_deployment("site")
    objects.create_version("site-v1", static_spec("site", uri, sha256(bundle)))
    version = objects.wait_state("site-v1", "ready", "failed")
    status = version["status"]
    assert status["state"] == "failed"
    assert condition(version, "Ready")["reason"] == reason
    prefix = f"{namespace}/{status['deploymentId']}/{status['id']}/"
    assert release_keys(env, namespace) == [prefix + "build.log"]
    assert reason in read_s3(env, status["buildLogUri"]).decode()
    uploads = env.s3().list_objects_v2(Bucket=UPLOADS_BUCKET, Prefix=s3_prefix).get("Contents", [])
    assert [o["Key"] for o in uploads] == [f"{s3_prefix}{name}.tar.gz"]


def test_checksum_mismatch_fails(env: Environment, objects: Objects, s3_prefix: str) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}s.tar.gz", bundle)
    objects.create_deployment("site")
    objects.create_version("site-v1", static_spec("site", uri, "0" * 64))
    version = objects.wait_state("site-v1", "ready", "failed")
    assert version["status"]["state"] == "failed"
    assert condition(version, "Ready")["reason"] == "ChecksumMismatch"


def test_a_release_of_another_tenant_is_not_an_allowed_source(env: Environment, objects: Objects, s3_prefix: str) -> None:
    bundle = tar_gz(SITE)
    uri = upload(env, f"{s3_prefix}s.tar.gz", bundle)
    objects.create_deployment("site")
    objects.create_version("site-v1", static_spec("site", uri, sha256(bundle)))
    first = objects.wait_state("site-v1", "ready")["status"]
    objects.create_version("copy", static_spec("site", first["artifactUri"], first["artifactSha256"]))
    version = objects.wait_state("copy", "ready", "failed")
    assert version["status"]["state"] == "failed"
    assert condition(version, "Ready")["reason"] == "SourceNotAllowed"
