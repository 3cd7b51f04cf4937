"""Promotion, rollout, rollback, revert and Auto, end to end on kwok nodes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess
from .helpers import GROUP, VERSION, Objects, condition, dynamic_spec, sha256, static_spec, tar_gz, wait_until

ADMIN = "miosa-admin"  # the CN of the environment's admin client certificate


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def promote(objects: Objects, deployment: str, version: str | None, **extra: Any) -> dict[str, Any]:
    return objects.custom.patch_namespaced_custom_object(
        GROUP, VERSION, objects.namespace, "deployments", deployment, {"spec": {"promotedVersion": version, **extra}}
    )


def wait_live(objects: Objects, deployment: str, version: str, timeout: float = 90) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        body = objects.deployment(deployment)
        status = body.get("status") or {}
        return body if status.get("liveVersion") == version and not status.get("rollout") else None

    return wait_until(live, timeout=timeout, what=f"{version} live on {deployment}")


def workload(api: client.ApiClient, namespace: str, name: str) -> client.V1Deployment:
    return client.AppsV1Api(api).read_namespaced_deployment(name, namespace)


def static_versions(env: Environment, objects: Objects, s3_prefix: str, deployment: str, count: int) -> list[str]:
    names = []
    for i in range(1, count + 1):
        bundle = tar_gz({"index.html": f"<h1>v{i}</h1>".encode()})
        key = f"{s3_prefix}{deployment}-v{i}.tar.gz"
        env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
        name = f"{deployment}-v{i}"
        objects.create_version(name, static_spec(deployment, f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
        names.append(name)
    for number, name in enumerate(names, start=1):
        status = objects.wait_state(name, "ready", "failed")["status"]
        assert status["state"] == "ready"
        assert status["versionNumber"] == number, "numbers follow creation order"
    return names


def test_promote_roll_forward_and_roll_back(
    env: Environment, api: client.ApiClient, objects: Objects, namespace: str, s3_prefix: str
) -> None:
    objects.create_deployment("site", replicas=2)
    v1, v2 = static_versions(env, objects, s3_prefix, "site", 2)

    promote(objects, "site", v1)
    dep = wait_live(objects, "site", v1)
    first = objects.version(v1)
    assert first["status"]["state"] == "ready" and first["status"]["promotedAt"]
    live = workload(api, namespace, "site")
    assert live.status.available_replicas == 2
    assert live.spec.template.metadata.annotations["deploy.miosa.io/version-id"] == first["status"]["id"]
    init = live.spec.template.spec.init_containers[0]
    assert init.command[:2] == ["miosa-operator", "fetch"] and first["status"]["artifactSha256"] in init.command
    assert condition(dep, "Ready")["status"] == "True"
    assert dep["status"]["history"][-1] | {"time": None} == {
        "version": v1,
        "versionNumber": first["status"]["versionNumber"],
        "action": "promote",
        "actor": ADMIN,
        "time": None,
        "reason": "",
    }

    promote(objects, "site", v2)
    wait_live(objects, "site", v2)
    assert objects.version(v1)["status"]["state"] == "archived" and objects.version(v1)["status"]["archivedAt"]
    assert objects.version(v2)["status"]["state"] == "ready" and objects.version(v2)["status"]["promotedAt"]

    objects.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "deployments",
        "site",
        {
            "metadata": {"annotations": {"deploy.miosa.io/change-cause": "v2 broke the contact form"}},
            "spec": {"promotedVersion": v1},
        },
    )
    dep = wait_live(objects, "site", v1)
    assert objects.version(v1)["status"]["state"] == "ready"
    assert objects.version(v2)["status"]["state"] == "archived"
    last = dep["status"]["history"][-1]
    assert (last["action"], last["version"], last["actor"], last["reason"]) == (
        "rollback",
        v1,
        ADMIN,
        "v2 broke the contact form",
    )
    assert [h["action"] for h in dep["status"]["history"]] == ["promote", "promote", "rollback"]
    assert (
        workload(api, namespace, "site").spec.template.metadata.annotations["deploy.miosa.io/version-id"]
        == objects.version(v1)["status"]["id"]
    )
    services = client.CoreV1Api(api).read_namespaced_service("site", namespace)
    assert services.spec.selector == {"deploy.miosa.io/app": "site"}


def test_webhook_refuses_only_what_can_never_succeed(env: Environment, objects: Objects, namespace: str, s3_prefix: str) -> None:
    objects.create_deployment("site")
    objects.create_deployment("other")
    (ready,) = static_versions(env, objects, s3_prefix, "site", 1)
    (foreign,) = static_versions(env, objects, s3_prefix, "other", 1)
    bad = tar_gz({"index.html": b"x"})
    key = f"{s3_prefix}bad.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bad)
    objects.create_version("site-bad", static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", "0" * 64))
    objects.wait_state("site-bad", "failed")
    objects.create_version("site-dyn", dynamic_spec("site"))  # wrong kind for a static Deployment
    objects.create_version("site-pending", dynamic_spec("nowhere"))  # another (missing) Deployment's
    cases = {
        "site-bad": "is failed; only ready or archived versions can be promoted",
        foreign: "belongs to Deployment 'other', not 'site'",
        "site-dyn": "is a dynamic version; Deployment 'site' is static",
        "site-pending": "belongs to Deployment 'nowhere'",
    }
    for version, message in cases.items():
        with pytest.raises(ApiException) as caught:
            promote(objects, "site", version)
        assert caught.value.status == 422, (version, caught.value.body)
        assert message in caught.value.body, (version, caught.value.body)
    assert "promotedVersion" not in objects.deployment("site")["spec"]
    promote(objects, "site", ready)  # and a good one is accepted
    wait_live(objects, "site", ready)


def test_promotion_is_intent_a_missing_version_is_admitted_with_a_warning_and_goes_live_once_ready(
    env: Environment, objects: Objects, namespace: str, s3_prefix: str
) -> None:
    """GitOps applies a version and its promotion in one sync, in any order, after a
    server-side dry run of the whole set: none of it is refused."""
    objects.create_deployment("site")
    (v1,) = static_versions(env, objects, s3_prefix, "site", 1)
    promote(objects, "site", v1)
    wait_live(objects, "site", v1)
    bundle = tar_gz({"index.html": b"<h1>v2</h1>"})
    key = f"{s3_prefix}site-v2.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    version = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "DeploymentVersion", "metadata": {"name": "site-v2", "namespace": namespace},
        "spec": static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)),
    }  # fmt: skip
    deployment = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Deployment", "metadata": {"name": "site", "namespace": namespace},
        "spec": {"kind": "static", "promotedVersion": "site-v2"},
    }  # fmt: skip
    # The commit: the Deployment first, then the version (the worst order), dry run first.
    manifest = yaml.safe_dump_all([deployment, version])
    dry = env.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert dry.returncode == 0, dry.stderr
    assert "Warning:" in dry.stderr and "no DeploymentVersion of that name exists" in dry.stderr, dry.stderr
    assert "WaitingForVersion" in dry.stderr
    applied = env.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(deployment), check=False)
    assert applied.returncode == 0, applied.stderr

    def waiting() -> dict[str, Any] | None:
        body = objects.deployment("site")
        ready = condition(body, "Ready")
        return body if ready and ready["reason"] == "WaitingForVersion" else None

    dep = wait_until(waiting, timeout=30, what="Deployment waiting for site-v2")
    assert condition(dep, "Ready")["status"] == "False"
    assert (condition(dep, "Reconciling")["status"], condition(dep, "Stalled")["status"]) == ("True", "False")
    assert dep["status"]["liveVersion"] == v1  # the live version keeps serving
    env.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(version))
    dep = wait_live(objects, "site", "site-v2")
    assert condition(dep, "Ready")["status"] == "True"
    assert objects.version(v1)["status"]["state"] == "archived"


def test_a_building_version_is_admitted_with_a_warning(
    env: Environment, api: client.ApiClient, objects: Objects, namespace: str
) -> None:
    # No pod may start here, so the dynamic version's health gate keeps it `building`.
    client.CoreV1Api(api).create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "none"}, "spec": {"hard": {"pods": "0"}}}
    )
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.wait_state("app-v1", "building")
    patched = env.kubectl(
        "-n", namespace, "patch", "deployments.deploy.miosa.io", "app", "--type=merge", "-p", '{"spec":{"promotedVersion":"app-v1"}}',
        check=False,
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    assert "Warning:" in patched.stderr and "is building" in patched.stderr, patched.stderr
    assert objects.deployment("app")["spec"]["promotedVersion"] == "app-v1"


def test_rollout_that_cannot_become_available_is_reverted(api: client.ApiClient, objects: Objects, namespace: str) -> None:
    objects.create_deployment("app", kind="dynamic", rollout={"progressDeadlineSeconds": 15})
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.create_version("app-v2", dynamic_spec("app", image="registry.example/app:2.0"))
    objects.wait_state("app-v1", "ready")
    objects.wait_state("app-v2", "ready")
    promote(objects, "app", "app-v1")
    wait_live(objects, "app", "app-v1")
    # From now on no new pod fits: v2's pods can never start, v1's keep running.
    client.CoreV1Api(api).create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "full"}, "spec": {"hard": {"pods": "1"}}}
    )
    promote(objects, "app", "app-v2")

    def reverted() -> dict[str, Any] | None:
        body = objects.deployment("app")
        failed = condition(body, "RolloutFailed")
        return body if failed and failed["status"] == "True" else None

    dep = wait_until(reverted, timeout=90, what="revert")
    status = dep["status"]
    assert status["liveVersion"] == "app-v1"
    assert status["history"][-1]["action"] == "revert" and status["history"][-1]["version"] == "app-v1"
    assert "app-v2 did not become available within 15s" in condition(dep, "RolloutFailed")["message"]
    # The commit's promotedVersion is not live: not Ready, and Stalled (kstatus "Failed").
    assert (condition(dep, "Ready")["status"], condition(dep, "Ready")["reason"]) == ("False", "RolloutReverted")
    assert (condition(dep, "Stalled")["status"], condition(dep, "Stalled")["reason"]) == ("True", "RolloutReverted")
    assert objects.version("app-v2")["status"]["state"] == "ready"  # never promoted, still promotable
    assert objects.version("app-v1")["status"]["state"] == "ready"
    wait_until(
        lambda: (
            workload(api, namespace, "app").spec.template.metadata.annotations["deploy.miosa.io/version-id"]
            == objects.version("app-v1")["status"]["id"]
        ),
        timeout=30,
        what="workload back on v1",
    )
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    assert any(e.reason == "RolloutReverted" and e.type == "Warning" for e in events)
    assert objects.deployment("app")["spec"]["promotedVersion"] == "app-v2"  # spec is never rewritten


def test_auto_policy_promotes_the_newest_ready_version(api: client.ApiClient, objects: Objects, namespace: str) -> None:
    objects.create_deployment("app", kind="dynamic", promotionPolicy="Auto")
    objects.create_version("app-v1", dynamic_spec("app"))
    dep = wait_live(objects, "app", "app-v1")
    assert dep["status"]["history"][-1]["action"] == "auto"
    objects.create_version("app-v2", dynamic_spec("app", image="registry.example/app:2.0"))
    wait_live(objects, "app", "app-v2")
    assert objects.version("app-v1")["status"]["state"] == "archived"
    assert workload(api, namespace, "app").spec.template.spec.containers[0].image == "registry.example/app:2.0"
