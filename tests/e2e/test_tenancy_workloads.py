"""The workloads the operator runs for tenants, end to end: the real control plane (kwok
nodes), the real S3 server, the real operator.

Every tenant is a namespace that enforces Pod Security "restricted", driven through a real
ServiceAccount token bound only to the write role (or ``edit``, for the attacks that need to
create apps/v1 objects).  Covered:

* the health gate waits out what the cluster does wrong (a ResourceQuota, a taint, missing
  capacity, a pod refused by Pod Security) with ``Stalled`` and its reason, never counting that
  time against the version, and the *same* version goes on to ``ready`` once it is fixed;
  only the version's own faults (an image that cannot be pulled) fail it;
* no adoption: a same-named workload or Service of a namespace editor, forged owner
  references included, is never taken over or changed;
* no repeated number after a Deployment is deleted and created again;
* no collected release of a version being promoted: the collector's claim and the Deployment's
  promotion mark race on one object and exactly one wins;
* every pod the operator creates is admitted under "restricted".
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import OPERATOR_ENV, UPLOADS_BUCKET, Environment, OperatorProcess, Tenant
from .helpers import GROUP, VERSION, Objects, condition, dynamic_spec, sha256, static_spec, tar_gz, wait_until

GATE_TIMEOUT = float(OPERATOR_ENV["MIOSA_HEALTH_GATE_TIMEOUT"])


@pytest.fixture
def tenants_(tenants: Any, operator: OperatorProcess) -> Any:
    """The tenants fixture, with the operator running."""
    return tenants


def objects(tenant: Tenant) -> Objects:
    return Objects(tenant.api, tenant.namespace)


def stalled(objs: Objects, name: str, reason: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = objs.version(name)
        found = condition(body, "Stalled")
        return body if found and found["status"] == "True" and found["reason"] == reason else None

    return wait_until(check, timeout=timeout, what=f"{name} Stalled with {reason}")


def deployment_stalled(objs: Objects, name: str, reason: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = objs.deployment(name)
        found = condition(body, "Stalled")
        return body if found and found["status"] == "True" and found["reason"] == reason else None

    return wait_until(check, timeout=timeout, what=f"Deployment {name} Stalled with {reason}")


def warnings(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e.reason for e in events if e.type == "Warning"]


def patch_deployment(objs: Objects, name: str, spec: dict[str, Any]) -> None:
    objs.custom.patch_namespaced_custom_object(GROUP, VERSION, objs.namespace, "deployments", name, {"spec": spec})


def wait_live(objs: Objects, name: str, version: str, timeout: float = 90) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        body = objs.deployment(name)
        status = body.get("status") or {}
        return body if status.get("liveVersion") == version and not status.get("rollout") else None

    return wait_until(live, timeout=timeout, what=f"{version} live on {name}")


# =========================================================================== the cluster's faults are waited out


def test_a_quota_stalls_the_health_gate_and_the_same_version_goes_on(api: client.ApiClient, tenants_: Any) -> None:
    tenant = tenants_("a")
    core = client.CoreV1Api(api)  # the namespace's administrator sets the quota
    core.create_namespaced_resource_quota(tenant.namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    objs = objects(tenant)
    objs.create_deployment("api", kind="dynamic")
    secret_env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    objs.create_version("api-v1", dynamic_spec("api", env=secret_env))

    version = stalled(objs, "api-v1", "QuotaExceeded")
    assert version["status"]["state"] == "building"
    assert "exceeded quota" in condition(version, "Stalled")["message"]
    assert condition(version, "Ready")["status"] == "False"
    wait_until(lambda: "QuotaExceeded" in warnings(api, tenant.namespace, "api-v1"), timeout=30, what="a Warning event")
    # The verification workload carries the Secret reference, never a value.
    workload = client.AppsV1Api(api).read_namespaced_deployment("api-v1-verify", tenant.namespace)
    env_var = workload.spec.template.spec.containers[0].env[0]
    assert env_var.value is None and env_var.value_from.secret_key_ref.name == "db"

    # Longer than the gate's deadline: the time without a pod is not the version's.
    time.sleep(GATE_TIMEOUT + 5)
    assert objs.version("api-v1")["status"]["state"] == "building"

    started = time.monotonic()
    core.delete_namespaced_resource_quota("no-pods", tenant.namespace)
    version = objs.wait_state("api-v1", "ready", "failed", timeout=90)
    assert version["status"]["state"] == "ready", version["status"]
    # The gate nudges the ReplicaSet: no waiting out the ReplicaSet controller's own backoff.
    assert time.monotonic() - started < 45
    assert condition(version, "Stalled")["status"] == "False" and condition(version, "Ready")["status"] == "True"
    wait_until(
        lambda: not client.AppsV1Api(api).list_namespaced_deployment(tenant.namespace).items, timeout=30, what="workload removed"
    )


def test_a_taint_stalls_the_gate_until_the_deployment_tolerates_it(api: client.ApiClient, tenants_: Any) -> None:
    tenant = tenants_("a")
    core = client.CoreV1Api(api)
    key = f"e2e.miosa.io/taint-{uuid.uuid4().hex[:6]}"
    nodes = [n.metadata.name for n in core.list_node(label_selector="type=kwok").items]
    taint = {"key": key, "value": "x", "effect": "NoSchedule"}

    def set_taints(add: bool) -> None:
        for name in nodes:
            taints = [t for t in (core.read_node(name).spec.taints or []) if t.key != key]
            body = [client.ApiClient().sanitize_for_serialization(t) for t in taints] + ([taint] if add else [])
            core.patch_node(name, {"spec": {"taints": body or None}})

    set_taints(True)
    try:
        objs = objects(tenant)
        objs.create_deployment("api", kind="dynamic")
        objs.create_version("api-v1", dynamic_spec("api"))
        version = stalled(objs, "api-v1", "PodsUnschedulable")
        assert "untolerated taint" in condition(version, "Stalled")["message"], condition(version, "Stalled")
        time.sleep(GATE_TIMEOUT + 5)
        assert objs.version("api-v1")["status"]["state"] == "building"
        # The tenant fixes it on the Deployment: the verification workload follows.
        patch_deployment(objs, "api", {"tolerations": [{"key": key, "operator": "Exists", "effect": "NoSchedule"}]})
        version = objs.wait_state("api-v1", "ready", "failed", timeout=90)
        assert version["status"]["state"] == "ready", version["status"]
    finally:
        set_taints(False)


def test_missing_capacity_stalls_the_gate_until_the_requests_fit(tenants_: Any) -> None:
    tenant = tenants_("a")
    objs = objects(tenant)
    objs.create_deployment("api", kind="dynamic", resources={"requests": {"cpu": "64"}, "limits": {"cpu": "64"}})  # nodes have 32
    objs.create_version("api-v1", dynamic_spec("api"))
    version = stalled(objs, "api-v1", "PodsUnschedulable")
    assert "Insufficient cpu" in condition(version, "Stalled")["message"]
    patch_deployment(objs, "api", {"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}})
    assert objs.wait_state("api-v1", "ready", "failed", timeout=90)["status"]["state"] == "ready"


def test_a_pod_the_namespace_policy_refuses_stalls_until_the_relaxation_is_dropped(api: client.ApiClient, tenants_: Any) -> None:
    tenant = tenants_("a")
    objs = objects(tenant)
    objs.create_deployment("api", kind="dynamic", podSecurity={"allowRoot": True})
    objs.create_version("api-v1", dynamic_spec("api"))
    version = stalled(objs, "api-v1", "PodCreationRefused")
    assert "violates PodSecurity" in condition(version, "Stalled")["message"]
    patch_deployment(objs, "api", {"podSecurity": None})
    version = objs.wait_state("api-v1", "ready", "failed", timeout=90)
    assert version["status"]["state"] == "ready", version["status"]
    # Promoted, the live pods are admitted under restricted too.
    patch_deployment(objs, "api", {"promotedVersion": "api-v1"})
    wait_live(objs, "api", "api-v1")
    pods = client.CoreV1Api(api).list_namespaced_pod(tenant.namespace, label_selector="deploy.miosa.io/app=api").items
    assert pods and all(p.spec.security_context.run_as_non_root for p in pods)
    assert not [c for c in objs.deployment("api")["status"]["conditions"] if c["type"] == "SecurityRelaxed"]


def test_a_relaxation_is_reported_where_the_namespace_allows_it(api: client.ApiClient, tenants_: Any) -> None:
    tenant = tenants_("a", labels={"pod-security.kubernetes.io/enforce": "baseline"})
    objs = objects(tenant)
    objs.create_deployment("api", kind="dynamic", podSecurity={"allowRoot": True}, promotionPolicy="Auto")
    objs.create_version("api-v1", dynamic_spec("api"))
    dep = wait_live(objs, "api", "api-v1")
    relaxed = condition(dep, "SecurityRelaxed")
    assert relaxed and relaxed["status"] == "True" and "allowRoot" in relaxed["message"]
    assert "SecurityRelaxed" in warnings(api, tenant.namespace, "api")


def test_an_image_that_cannot_be_pulled_fails_the_version(tenants_: Any) -> None:
    objs = objects(tenants_("a"))
    objs.create_deployment("api", kind="dynamic")
    objs.create_version("api-v1", dynamic_spec("api", image="kwok.invalid/unpullable:1"))  # hack/kwok-faults.yaml
    version = objs.wait_state("api-v1", "ready", "failed", timeout=GATE_TIMEOUT + 60)
    assert version["status"]["state"] == "failed"
    ready = condition(version, "Ready")
    assert ready["reason"] == "ImagePullFailed" and "kwok.invalid/unpullable:1" in ready["message"]
    assert condition(version, "Stalled")["status"] == "True"


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            {"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            "set exactly one of value or valueFrom",
        ),
        ({"name": "A"}, "set exactly one of value or valueFrom"),
        ({"name": "A", "valueFrom": {}}, "set exactly one of secretKeyRef or configMapKeyRef"),
        (
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            "set exactly one of secretKeyRef or configMapKeyRef",
        ),
        (
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}},
            "set exactly one of secretKeyRef or configMapKeyRef",
        ),
        (
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "../other", "key": "k"}}},
            "spec.runtime.env[0].valueFrom.secretKeyRef.name",
        ),
    ],
)
def test_env_references_are_validated_by_the_api_server(tenants_: Any, variable: dict[str, Any], message: str) -> None:
    objs = objects(tenants_("a"))
    with pytest.raises(ApiException) as refused:
        objs.create_version("api-v1", dynamic_spec("api", env=[variable]))
    assert refused.value.status == 422 and message in refused.value.body, refused.value.body
    assert "spec.runtime.env[0]" in refused.value.body


# =========================================================================== no adoption


def restricted_pod(image: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def foreign_workload(name: str, **metadata: Any) -> dict[str, Any]:
    labels = {"app": f"theirs-{name}"}
    return {
        "metadata": {"name": name, **metadata},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": restricted_pod("attacker.example/always-ready:1", labels),
        },
    }


def test_an_editor_cannot_make_a_version_pass_with_another_workload(api: client.ApiClient, tenants_: Any) -> None:
    editor = tenants_("a", role="edit")
    apps, core = client.AppsV1Api(editor.api), client.CoreV1Api(editor.api)
    # Pre-created under the names the operator will use, through the editor's own token.
    theirs = apps.create_namespaced_deployment(editor.namespace, foreign_workload("api-v1-verify"))
    their_service = core.create_namespaced_service(
        editor.namespace, {"metadata": {"name": "api"}, "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}}
    )
    wait_until(
        lambda: (apps.read_namespaced_deployment("api-v1-verify", editor.namespace).status.available_replicas or 0) >= 1,
        timeout=60,
        what="the editor's workload available",
    )
    objs = objects(editor)
    objs.create_deployment("api", kind="dynamic")
    objs.create_version("api-v1", dynamic_spec("api"))

    version = stalled(objs, "api-v1", "NameConflict")
    assert version["status"]["state"] == "building"  # available as it is, it did not count
    assert "Deployment 'api-v1-verify' exists and was not created by miosa-operator" in condition(version, "Stalled")["message"]
    wait_until(lambda: "NameConflict" in warnings(api, editor.namespace, "api-v1"), timeout=30, what="a Warning event")
    time.sleep(3)
    after = apps.read_namespaced_deployment("api-v1-verify", editor.namespace)
    assert after.metadata.uid == theirs.metadata.uid and not after.metadata.owner_references
    assert after.spec.template.spec.containers[0].image == "attacker.example/always-ready:1"
    assert after.metadata.labels is None or "deploy.miosa.io/version-id" not in after.metadata.labels

    apps.delete_namespaced_deployment("api-v1-verify", editor.namespace)
    version = objs.wait_state("api-v1", "ready", "failed", timeout=90)
    assert version["status"]["state"] == "ready"

    # Promotion meets the editor's Service: the Deployment says so and leaves it alone.
    patch_deployment(objs, "api", {"promotedVersion": "api-v1"})
    dep = deployment_stalled(objs, "api", "NameConflict")
    assert "Service 'api' exists and was not created by miosa-operator" in condition(dep, "Ready")["message"]
    service = core.read_namespaced_service("api", editor.namespace)
    assert service.metadata.uid == their_service.metadata.uid and service.spec.selector == {"app": "theirs"}
    core.delete_namespaced_service("api", editor.namespace)
    wait_live(objs, "api", "api-v1")


def test_objects_forging_the_operators_owner_reference_are_replaced_not_adopted(api: client.ApiClient, tenants_: Any) -> None:
    editor = tenants_("a", role="edit")
    apps = client.AppsV1Api(editor.api)
    objs = objects(editor)
    dep = objs.create_deployment("api", kind="dynamic")
    dep = wait_until(lambda: (objs.deployment("api").get("status") or {}).get("id") and objs.deployment("api"), what="an id")
    forged_owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Deployment",
        "name": "api",
        "uid": dep["metadata"]["uid"],
        "controller": True,
    }
    forged = apps.create_namespaced_deployment(
        editor.namespace,
        foreign_workload("api", ownerReferences=[forged_owner], labels={"deploy.miosa.io/deployment-id": dep["status"]["id"]}),
    )
    objs.create_version("api-v1", dynamic_spec("api"))
    objs.wait_state("api-v1", "ready")
    patch_deployment(objs, "api", {"promotedVersion": "api-v1"})
    wait_live(objs, "api", "api-v1")
    live = apps.read_namespaced_deployment("api", editor.namespace)
    assert live.metadata.uid != forged.metadata.uid
    assert live.spec.template.spec.containers[0].image == "registry.example/app:1.0"
    owned = {o["kind"]: o["uid"] for o in objs.deployment("api")["status"]["ownedObjects"]}
    assert owned["Deployment"] == live.metadata.uid
    # An edit of the live workload's image is put back at the next reconcile.
    apps.patch_namespaced_deployment(
        "api",
        editor.namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "attacker.example/x:1"}]}}}},
    )
    patch_deployment(objs, "api", {"replicas": 2})  # any change makes the operator look again
    wait_until(
        lambda: (
            apps.read_namespaced_deployment("api", editor.namespace).spec.template.spec.containers[0].image
            == "registry.example/app:1.0"
        ),
        timeout=60,
        what="the image put back",
    )


# =========================================================================== numbers


def test_numbers_never_repeat_when_a_deployment_is_deleted_and_created_again(tenants_: Any) -> None:
    objs = objects(tenants_("a"))
    objs.create_deployment("api", kind="dynamic", promotionPolicy="Auto")
    for name in ("api-v1", "api-v2"):
        objs.create_version(name, dynamic_spec("api"))
        objs.wait_state(name, "ready")
    wait_live(objs, "api", "api-v2")
    old_id = objs.deployment("api")["status"]["id"]
    objs.custom.delete_namespaced_custom_object(GROUP, VERSION, objs.namespace, "deployments", "api")

    def gone() -> bool:
        try:
            objs.deployment("api")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, what="the Deployment deleted")
    objs.create_deployment("api", kind="dynamic", promotionPolicy="Auto")
    dep = wait_until(lambda: (objs.deployment("api").get("status") or {}).get("id") and objs.deployment("api"), what="an id")
    assert dep["status"]["id"] != old_id
    # Auto does not bring back the previous incarnation's newest version.
    ready = wait_until(lambda: condition(objs.deployment("api"), "Ready"), what="a Ready condition")
    assert ready["reason"] == "NothingPromoted", ready
    objs.create_version("api-v3", dynamic_spec("api"))
    v3 = objs.wait_state("api-v3", "ready")
    assert v3["status"]["versionNumber"] == 3 and v3["status"]["deploymentId"] == dep["status"]["id"]
    wait_live(objs, "api", "api-v3")
    numbers = sorted(v["status"]["versionNumber"] for v in objs.versions())
    assert numbers == [1, 2, 3]


# =========================================================================== collection and promotion


def test_a_version_promoted_during_a_sweep_keeps_its_release(env: Environment, api: client.ApiClient, tenants_: Any) -> None:
    """The collector has planned (v2 is collectable) and checked v2's Deployment; right then the
    tenant promotes v2 and the operator marks it: the collector's claim, written with the
    resourceVersion it listed, must fail, and v2's release stays."""
    from miosa_operator.api import meta as api_meta
    from miosa_operator.controllers.retention import Collector
    from miosa_operator.domain.retention import Policy
    from miosa_operator.kube.client import Kube
    from miosa_operator.kube.events import KubeEvents
    from miosa_operator.settings import Settings
    from miosa_operator.store.router import StoreRouter

    tenant = tenants_("a")
    objs = objects(tenant)
    objs.create_deployment("site")
    for i in (1, 2):
        bundle = tar_gz({"index.html": f"<h1>v{i}</h1>".encode()})
        key = f"{tenant.namespace}/site-v{i}.tar.gz"
        env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
        objs.create_version(f"site-v{i}", static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
    releases = {n: objs.wait_state(n, "ready")["status"]["artifactUri"] for n in ("site-v1", "site-v2")}
    admin = Objects(api, tenant.namespace)  # what the tenant's administrator may do
    admin.patch_version("site-v1", {"metadata": {"annotations": {"deploy.miosa.io/retain": "true"}}})
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        tenant.namespace,
        "retentionpolicies",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RetentionPolicy",
            "metadata": {"name": "default"},
            "spec": {"retainDays": 0, "rollbackWindow": 0},
        },
    )

    def policy() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "retentionpolicies", "default")

    accepted = wait_until(lambda: condition(policy(), "Ready"), timeout=30, what="the policy accepted")
    assert accepted["status"] == "True" and accepted["reason"] == "PolicyAccepted"

    kube = Kube.from_environment()
    settings = Settings.from_env({**env.values, **OPERATOR_ENV})
    collector = Collector(kube, StoreRouter.from_settings(settings), Policy(), KubeEvents(kube))
    real_get = kube.get
    raced: list[bool] = []

    def promote_after_the_check(plural: str, namespace: str, name: str) -> Any:
        answer = real_get(plural, namespace, name)
        if plural == api_meta.DEPLOYMENT_PLURAL and not raced:
            raced.append(True)
            patch_deployment(objs, "site", {"promotedVersion": "site-v2"})
            # Marked for the rollout, or already live (kwok pods are ready at once; the mark then
            # is gone again): either way the version changed after the collector listed it.
            wait_until(
                lambda: {"promotion", "promotedAt"} & set(objs.version("site-v2").get("status") or {}),
                timeout=30,
                what="v2 marked",
            )
        return answer

    kube.get = promote_after_the_check  # type: ignore[method-assign]
    report = collector.sweep(now=datetime.now(UTC) + timedelta(days=1), namespace=tenant.namespace)
    assert raced and [d.name for d in report.plan.collect] == ["site-v2"]
    assert report.collected == [] and [d.name for d in report.skipped] == ["site-v2"]
    v2 = objs.version("site-v2")["status"]
    assert "collectionClaimedAt" not in v2 and "artifactsCollectedAt" not in v2
    bucket, key = releases["site-v2"].removeprefix("s3://").split("/", 1)
    assert env.s3().get_object(Bucket=bucket, Key=key)["Body"].read()  # the release is still there
    wait_live(objs, "site", "site-v2")  # and it goes live
    swept = policy()["status"]
    assert swept["lastSweepAt"] and swept["collected"] == 0 and condition({"status": swept}, "Ready")["reason"] == "Swept"

    # The other way round: once claimed and collected, v1 can no longer be promoted.
    admin.patch_version("site-v1", {"metadata": {"annotations": {"deploy.miosa.io/retain": None}}})
    kube.get = real_get  # type: ignore[method-assign]
    # A version that changed since the sweep listed it (here kopf may still be writing its own
    # annotation after the edit) is left for the next sweep, which collects it.
    for _ in range(10):
        report = collector.sweep(now=datetime.now(UTC) + timedelta(days=1), namespace=tenant.namespace)
        if not report.skipped:
            break
        time.sleep(1)
    assert [d.name for d in report.collected] == ["site-v1"], (report.plan.kept_because(), report.skipped, report.failed)
    v1 = objs.version("site-v1")["status"]
    assert v1["collectionClaimedAt"] and v1["artifactsCollectedAt"]
    with pytest.raises(ApiException) as refused:
        patch_deployment(objs, "site", {"promotedVersion": "site-v1"})
    assert refused.value.status == 422 and "garbage-collected" in refused.value.body
