"""Our live objects in every state, read by kstatus itself, by Flux's evaluator of our
healthCheckExprs and by our Argo CD health.lua: each verdict is the one the table in
tests/unit/health_cases.py promises, and the fixture there carries the same conditions as
the live object (so the unit tests run on what the operator really writes)."""

from __future__ import annotations

import subprocess
from typing import Any

from kubernetes import client

from unit.argocd import argocd_health
from unit.health_cases import CASES

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess
from .health import flux_health, kstatus
from .helpers import Objects, condition, dynamic_spec, sha256, static_spec, tar_gz, wait_until
from .test_promotion import promote, wait_live
from .test_retention import gc

BY_NAME = {case.name: case for case in CASES}
TRIO = ("Ready", "Reconciling", "Stalled")


def trio(obj: dict[str, Any]) -> dict[str, tuple[str, str] | None]:
    return {t: (c["status"], c["reason"]) if (c := condition(obj, t)) else None for t in TRIO}


def check(observed: dict[str, dict[str, Any]]) -> None:
    """Every live object (by case name) gets the table's verdicts, and has the fixture's conditions."""
    names = list(observed)
    objs = [observed[name] for name in names]
    got = {
        name: (argocd_health(obj)["status"], flux, ks)
        for name, obj, flux, ks in zip(names, objs, flux_health(*objs), kstatus(*objs), strict=True)
    }
    want = {name: (BY_NAME[name].argocd, BY_NAME[name].flux, BY_NAME[name].kstatus) for name in names}
    assert got == want
    assert {name: trio(observed[name]) for name in names} == {name: trio(BY_NAME[name].obj) for name in names}


def upload(env: Environment, namespace: str, name: str) -> tuple[str, str]:
    data = tar_gz({"index.html": f"<h1>{name}</h1>".encode()})
    key = f"{namespace}/{name}.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=data)
    return f"s3://{UPLOADS_BUCKET}/{key}", sha256(data)


def test_versions_and_deployments_in_every_state(
    env: Environment, api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    objects = Objects(api, namespace)
    objects.create_deployment("site")
    objects.create_deployment("empty")
    uris = {name: upload(env, namespace, name) for name in ("site-v1", "site-v2", "site-v3")}
    for name, (uri, digest) in uris.items():
        objects.create_version(name, static_spec("site", uri, digest))
    objects.create_version("site-bad", static_spec("site", uris["site-v1"][0], "0" * 64))
    objects.create_version("orphan-v1", dynamic_spec("nowhere"))
    for name in ("site-v1", "site-v2", "site-v3"):
        objects.wait_state(name, "ready")
    objects.wait_state("site-bad", "failed")
    objects.wait_state("orphan-v1", "created")
    promote(objects, "site", "site-v1")
    wait_live(objects, "site", "site-v1")
    promote(objects, "site", "site-v2")
    wait_live(objects, "site", "site-v2")
    # site-v3 was never live: collected 31 days on; its record stays.
    try:
        report = gc(env, namespace, 31, dry_run=False)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"miosa-operator gc failed:\n{exc.stdout}\n{exc.stderr}") from None
    assert [row["name"] for row in report["collected"]] == ["site-v3"]
    wait_until(lambda: objects.version("site-v3")["status"].get("artifactsCollectedAt"), what="site-v3 collected")
    wait_until(lambda: condition(objects.deployment("empty"), "Ready"), what="empty Deployment's conditions")
    policy = {"apiVersion": "deploy.miosa.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "default"}, "spec": {}}
    objects.custom.create_namespaced_custom_object("deploy.miosa.io", "v1alpha1", namespace, "retentionpolicies", policy)
    retention = objects.custom.get_namespaced_custom_object(
        "deploy.miosa.io", "v1alpha1", namespace, "retentionpolicies", "default"
    )

    check(
        {
            "version-deployment-not-found": objects.version("orphan-v1"),
            "version-ready": objects.version("site-v2"),
            "version-archived": objects.version("site-v1"),
            "version-failed": objects.version("site-bad"),
            "version-collected": objects.version("site-v3"),
            "deployment-nothing-promoted": objects.deployment("empty"),
            "deployment-live": objects.deployment("site"),
            "retention-policy-new" if "status" not in retention else "retention-policy-swept": retention,
        }
    )


def wait_pending(objects: Objects, name: str) -> None:
    reason = lambda: (condition(objects.version(name), "Ready") or {}).get("reason")  # noqa: E731
    wait_until(lambda: reason() == "ArtifactPending", what=f"{name} waits for its bundle")


def test_waiting_for_a_pending_version_then_its_failure(
    env: Environment, api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """A version whose bundle is not uploaded yet waits for it (``created``, ArtifactPending: the
    CI upload may trail the commit): promoting it makes the Deployment wait, and it rolls out once the bundle is
    there; a bundle that then turns out wrong fails the version, and the Deployment says so."""
    objects = Objects(api, namespace)
    objects.create_deployment("site")
    uri, digest = upload(env, namespace, "site-v1")
    objects.create_version("site-v1", static_spec("site", uri, digest))
    objects.wait_state("site-v1", "ready")
    promote(objects, "site", "site-v1")
    wait_live(objects, "site", "site-v1")

    data = tar_gz({"index.html": b"<h1>v2</h1>"})
    late = f"s3://{UPLOADS_BUCKET}/{namespace}/site-v2.tar.gz"
    objects.create_version("site-v2", static_spec("site", late, sha256(data)))
    wait_pending(objects, "site-v2")
    promote(objects, "site", "site-v2")
    reason = lambda: (condition(objects.deployment("site"), "Ready") or {}).get("reason")  # noqa: E731
    wait_until(lambda: reason() == "WaitingForVersion", what="WaitingForVersion")
    check({"version-artifact-pending": objects.version("site-v2"), "deployment-waiting-for-version": objects.deployment("site")})
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=f"{namespace}/site-v2.tar.gz", Body=data)
    wait_live(objects, "site", "site-v2")

    objects.create_version("site-v3", static_spec("site", f"s3://{UPLOADS_BUCKET}/{namespace}/site-v3.tar.gz", "0" * 64))
    wait_pending(objects, "site-v3")
    promote(objects, "site", "site-v3")
    wait_until(lambda: reason() == "WaitingForVersion", what="WaitingForVersion")
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=f"{namespace}/site-v3.tar.gz", Body=data)  # not what the sha256 says
    objects.wait_state("site-v3", "failed")
    wait_until(lambda: reason() == "VersionFailed", what="VersionFailed")
    deployment = objects.deployment("site")
    assert deployment["status"]["liveVersion"] == "site-v2"
    check({"version-failed": objects.version("site-v3"), "deployment-version-failed": deployment})


def test_reverted_rollout(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> None:
    objects = Objects(api, namespace)
    objects.create_deployment("app", kind="dynamic", rollout={"progressDeadlineSeconds": 15})
    for name, image in (("app-v1", "registry.example/app:1.0"), ("app-v2", "registry.example/app:2.0")):
        objects.create_version(name, dynamic_spec("app", image=image))
        objects.wait_state(name, "ready")
    promote(objects, "app", "app-v1")
    wait_live(objects, "app", "app-v1")
    # From now on no new pod fits: v2's rollout cannot become available and is reverted.
    client.CoreV1Api(api).create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "full"}, "spec": {"hard": {"pods": "1"}}}
    )
    promote(objects, "app", "app-v2")
    stalled = lambda: (condition(objects.deployment("app"), "Stalled") or {}).get("status") == "True"  # noqa: E731
    wait_until(stalled, timeout=90, what="revert")
    check({"deployment-rollout-reverted": objects.deployment("app")})
