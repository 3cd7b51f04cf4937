"""The health gate of dynamic versions against the in-memory API server (``FakeKube``).

What is simulated here is what the cluster's controllers would write: the apps/v1 Deployment
controller (``mark_available``, a ``ReplicaFailure`` condition when the ReplicaSet cannot
create its pod), the scheduler (``PodScheduled``) and the kubelet (container states).  The
rule under test: only the version's own faults are terminal; the cluster's are waited out and
shown as ``Stalled`` with their reason, and their time never counts against the deadline.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from miosa_operator.api import meta
from miosa_operator.api.meta import ANNOTATION_NUDGED_AT
from miosa_operator.api.models import VersionState
from miosa_operator.controllers.common import Retry
from miosa_operator.kube.client import TransientApiError

from .conftest import NS, Env, SimulatedCrash, ready_condition, state
from .fakes import WORKLOADS, iso
from .kstatus import kstatus

Obj = dict[str, Any]
VERIFY = "api-v1-verify"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    environment = Env(tmp_path, health_gate_timeout=60.0)
    environment.deployment("api", kind="dynamic")
    return environment


def start(env: Env, variables: list[Obj] | None = None) -> Obj:
    """A dynamic version whose gate has created its verification workload."""
    env.dynamic_version("api-v1", "api", **({"env": variables} if variables is not None else {}))
    assert isinstance(env.step("api-v1"), Retry)
    workload = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert workload is not None
    return workload


def add_pod(
    env: Env,
    *,
    name: str = "api-v1-verify-x1",
    scheduled_at: datetime | None = None,
    unschedulable: str | None = None,
    running_since: datetime | None = None,
    ready: bool = False,
    waiting: tuple[str, str] | None = None,
    restarts: int = 0,
    last_exit: int | None = None,
    containers: list[Obj] | None = None,
) -> None:
    workload = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert workload is not None
    conditions: list[Obj] = []
    if unschedulable is not None:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable})
    elif scheduled_at is not None:
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": iso(scheduled_at)})
        conditions.append(
            {"type": "Ready", "status": "True" if ready else "False", "message": "containers with unready status: [app]"}
        )
    container_status: Obj = {"name": "app", "image": "registry.example/api:1.2.3", "restartCount": restarts, "ready": ready}
    if running_since is not None:
        container_status["state"] = {"running": {"startedAt": iso(running_since)}}
    elif waiting is not None:
        container_status["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if last_exit is not None:
        container_status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    status: Obj = {"phase": "Running" if running_since else "Pending", "conditions": conditions}
    if scheduled_at is not None and unschedulable is None:
        status["containerStatuses"] = [container_status]
    env.kube.add_pod(
        NS,
        {
            "metadata": {"name": name, "labels": workload["spec"]["selector"]["matchLabels"]},
            "spec": {"containers": containers if containers is not None else workload["spec"]["template"]["spec"]["containers"]},
            "status": status,
        },
    )


def condition(obj: Obj, type_: str) -> Obj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


# =========================================================================== the happy path


def test_a_healthy_version_passes_and_its_workload_is_removed(env: Env) -> None:
    workload = start(env)
    created = env.get("api-v1")
    assert workload["metadata"]["ownerReferences"] == [
        {
            "apiVersion": meta.API_VERSION,
            "kind": "DeploymentVersion",
            "name": "api-v1",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert workload["metadata"]["labels"]["deploy.miosa.io/version-id"] == created["status"]["id"]
    # Its uid is recorded: that is what makes it the operator's own.
    assert created["status"]["ownedObjects"] == [{"kind": "Deployment", "name": VERIFY, "uid": workload["metadata"]["uid"]}]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/api:1.2.3" and container["command"] == ["/app/server"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["env"] == [{"name": "MODE", "value": "prod"}]
    assert env.events.reasons() == ["HealthGateStarted"]
    assert kstatus(env.get("api-v1")) == "InProgress"

    env.clock.advance(10)
    assert isinstance(env.step("api-v1"), Retry)
    assert len(env.kube.calls_to("create_object")) == 1  # never a second workload

    env.kube.mark_available(NS, VERIFY)
    add_pod(env, scheduled_at=env.clock(), running_since=env.clock(), ready=True)
    assert env.step("api-v1") == VersionState.READY
    version = env.get("api-v1")
    assert ready_condition(version)["status"] == "True" and kstatus(version) == "Current"
    assert version["status"]["readyAt"] == "2026-05-14T12:00:10Z"
    assert env.kube.peek(WORKLOADS, NS, VERIFY) is None
    assert env.events.reasons() == ["HealthGateStarted", "Ready"]


def test_the_verification_pod_meets_pod_security_restricted_and_has_resources(env: Env) -> None:
    pod = start(env)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]


def test_the_verification_pod_gets_the_deployments_pod_settings_and_secret_references(env: Env) -> None:
    env.kube.patch(
        meta.DEPLOYMENT_PLURAL,
        NS,
        "api",
        {
            "spec": {
                "nodeSelector": {"pool": "apps"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "apps", "effect": "NoSchedule"}],
                "imagePullSecrets": [{"name": "registry"}],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
                "podSecurity": {"runAsUser": 1000},
            }
        },
    )
    env_vars = [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode", "optional": True}}},
    ]
    pod = start(env, env_vars)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "apps"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "apps", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    assert container["env"] == env_vars  # references only: no value in any spec


# =========================================================================== the version's own faults


def test_readiness_failing_for_the_whole_deadline_fails_the_version(env: Env) -> None:
    start(env)
    env.clock.advance(30)  # the pod waited for a node; that does not count
    started = env.clock()
    add_pod(env, scheduled_at=started, running_since=started)
    env.clock.advance(60)  # exactly at the deadline: still waiting
    assert isinstance(env.step("api-v1"), Retry)
    assert state(env.get("api-v1")) == "building"
    env.clock.advance(1)
    assert env.step("api-v1") == VersionState.FAILED

    version = env.get("api-v1")
    ready = ready_condition(version)
    assert (ready["status"], ready["reason"]) == ("False", "HealthCheckFailed")
    assert "/healthz" in ready["message"] and "within 60s of starting" in ready["message"]
    assert kstatus(version) == "Failed"
    assert env.kube.peek(WORKLOADS, NS, VERIFY) is None
    assert env.events.events[-1].type == "Warning" and env.events.events[-1].reason == "HealthCheckFailed"


def test_an_image_that_cannot_be_pulled_fails_after_the_deadline(env: Env) -> None:
    start(env)
    add_pod(env, scheduled_at=env.clock(), waiting=("ImagePullBackOff", "Back-off pulling image"))
    env.clock.advance(30)
    assert isinstance(env.step("api-v1"), Retry)  # pulls are retried for a while: registries hiccup
    assert "pulling" in ready_condition(env.get("api-v1"))["message"]
    assert condition(env.get("api-v1"), "Reconciling")["status"] == "True"
    env.clock.advance(31)
    assert env.step("api-v1") == VersionState.FAILED
    ready = ready_condition(env.get("api-v1"))
    assert ready["reason"] == "ImagePullFailed" and "registry.example/api:1.2.3" in ready["message"]


def test_an_invalid_image_name_fails_at_once(env: Env) -> None:
    start(env)
    add_pod(env, scheduled_at=env.clock(), waiting=("InvalidImageName", "couldn't parse image name"))
    assert env.step("api-v1") == VersionState.FAILED
    assert ready_condition(env.get("api-v1"))["reason"] == "ImagePullFailed"


def test_a_crash_loop_fails_the_version(env: Env) -> None:
    start(env)
    add_pod(env, scheduled_at=env.clock(), waiting=("CrashLoopBackOff", "back-off 10s"), restarts=1, last_exit=1)
    assert isinstance(env.step("api-v1"), Retry)  # one restart: give it another chance
    env.kube.remove("v1/pods", NS, "api-v1-verify-x1")
    add_pod(env, scheduled_at=env.clock(), waiting=("CrashLoopBackOff", "back-off 20s"), restarts=2, last_exit=3)
    assert env.step("api-v1") == VersionState.FAILED
    ready = ready_condition(env.get("api-v1"))
    assert ready["reason"] == "CrashLoopBackOff" and "exit code 3" in ready["message"]


# =========================================================================== the cluster's faults


def test_unschedulable_time_never_counts_and_the_same_version_goes_on(env: Env) -> None:
    start(env)
    add_pod(env, unschedulable="0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")
    for _ in range(3):
        env.clock.advance(600)  # ten deadlines
        assert isinstance(env.step("api-v1"), Retry)
    version = env.get("api-v1")
    assert state(version) == "building"
    assert (condition(version, "Stalled")["status"], condition(version, "Stalled")["reason"]) == ("True", "PodsUnschedulable")
    assert "didn't match Pod's node affinity" in condition(version, "Stalled")["message"]
    assert kstatus(version) == "Failed"
    assert [e.reason for e in env.events.events if e.type == "Warning"] == ["PodsUnschedulable"]  # once, not per poll

    # Capacity is added: the pod is scheduled and starts; its own deadline starts now.
    env.kube.remove("v1/pods", NS, "api-v1-verify-x1")
    add_pod(env, scheduled_at=env.clock(), running_since=env.clock())
    env.clock.advance(59)
    assert isinstance(env.step("api-v1"), Retry)
    version = env.get("api-v1")
    assert condition(version, "Stalled")["status"] == "False" and condition(version, "Reconciling")["status"] == "True"
    env.kube.mark_available(NS, VERIFY)
    assert env.step("api-v1") == VersionState.READY


def test_a_quota_that_refuses_the_pod_stalls_and_nudges_until_raised(env: Env) -> None:
    start(env)
    workload = env.kube.objects[(WORKLOADS, NS, VERIFY)]
    workload["status"] = {
        "conditions": [
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "api-v1-verify-x1" is forbidden: exceeded quota: no-pods, requested: pods=1, used: pods=0, limited: pods=0',
            }
        ]
    }
    env.clock.advance(3600)
    assert isinstance(env.step("api-v1"), Retry)
    version = env.get("api-v1")
    stalled = condition(version, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "QuotaExceeded") and "exceeded quota" in stalled["message"]
    assert state(version) == "building"
    nudged = env.kube.peek(WORKLOADS, NS, VERIFY)["metadata"]["annotations"][ANNOTATION_NUDGED_AT]  # type: ignore[index]
    assert nudged == iso(env.clock())
    env.clock.advance(5)
    assert isinstance(env.step("api-v1"), Retry)
    assert len(env.kube.calls_to("patch_object")) == 1  # not more often than every 10 s
    env.clock.advance(6)
    assert isinstance(env.step("api-v1"), Retry)
    assert len(env.kube.calls_to("patch_object")) == 2

    # The quota is raised: the ReplicaSet creates the pod and it becomes ready.
    env.kube.objects[(WORKLOADS, NS, VERIFY)]["status"] = {}
    add_pod(env, scheduled_at=env.clock(), running_since=env.clock(), ready=True)
    env.kube.mark_available(NS, VERIFY)
    assert env.step("api-v1") == VersionState.READY


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('pods "x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true', "PodCreationRefused"),
        ('pods "x" is forbidden: maximum memory usage per Container is 256Mi', "PodCreationRefused"),
    ],
)
def test_admission_refusing_the_pod_stalls_with_the_api_servers_words(env: Env, message: str, reason: str) -> None:
    start(env)
    env.kube.objects[(WORKLOADS, NS, VERIFY)]["status"] = {
        "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}]
    }
    env.clock.advance(3600)
    assert isinstance(env.step("api-v1"), Retry)
    stalled = condition(env.get("api-v1"), "Stalled")
    assert (stalled["reason"], stalled["status"]) == (reason, "True") and message in stalled["message"]


def test_a_missing_secret_stalls_until_it_exists(env: Env) -> None:
    start(env, [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}])
    add_pod(env, scheduled_at=env.clock(), waiting=("CreateContainerConfigError", 'secret "api" not found'))
    env.clock.advance(600)
    assert isinstance(env.step("api-v1"), Retry)
    stalled = condition(env.get("api-v1"), "Stalled")
    assert stalled["reason"] == "ContainerConfigError" and 'secret "api" not found' in stalled["message"]
    # The Secret is created: the kubelet starts the container, whose clock starts now.
    env.kube.remove("v1/pods", NS, "api-v1-verify-x1")
    add_pod(env, scheduled_at=env.clock(), running_since=env.clock())
    env.clock.advance(30)
    assert isinstance(env.step("api-v1"), Retry)
    env.kube.mark_available(NS, VERIFY)
    assert env.step("api-v1") == VersionState.READY


def test_no_pod_at_all_is_waited_for_and_never_blamed_on_the_version(env: Env) -> None:
    start(env)
    env.clock.advance(3600)
    assert isinstance(env.step("api-v1"), Retry)
    assert state(env.get("api-v1")) == "building"
    assert "waiting for the verification pod to be created" in ready_condition(env.get("api-v1"))["message"]


def test_changing_the_deployments_settings_while_stalled_updates_the_verification_workload(env: Env) -> None:
    start(env)
    add_pod(env, unschedulable="0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")
    env.kube.patch(meta.DEPLOYMENT_PLURAL, NS, "api", {"spec": {"nodeSelector": {"pool": "apps"}}})
    assert isinstance(env.step("api-v1"), Retry)
    workload = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert workload is not None and workload["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "apps"}
    assert len(env.kube.calls_to("replace_object")) == 1 and len(env.kube.calls_to("create_object")) == 1


# =========================================================================== only own objects


def foreign_workload(image: str = "attacker.example/always-ready:1", **metadata: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": VERIFY, **metadata},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }


def test_a_same_named_foreign_workload_is_a_name_conflict_and_never_touched(env: Env) -> None:
    foreign = env.kube.create_object("Deployment", NS, foreign_workload())
    env.kube.mark_available(NS, VERIFY)  # it is even available: it must not count
    env.dynamic_version("api-v1", "api")
    env.clock.advance(3600)
    assert isinstance(env.step("api-v1"), Retry)
    version = env.get("api-v1")
    stalled = condition(version, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "NameConflict")
    assert f"Deployment '{VERIFY}' exists and was not created by miosa-operator" in stalled["message"]
    assert state(version) == "building" and kstatus(version) == "Failed"
    assert ("Warning", "NameConflict") in [(e.type, e.reason) for e in env.events.events]
    untouched = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert untouched is not None and untouched["metadata"]["uid"] == foreign["metadata"]["uid"]
    assert untouched["spec"] == foreign["spec"]
    assert not [c for c in env.kube.calls if c.method in ("replace_object", "patch_object", "delete_object")]

    # Deleted by its owner: the gate goes on with a workload of its own.
    env.kube.remove(WORKLOADS, NS, VERIFY)
    assert isinstance(env.step("api-v1"), Retry)
    ours = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert ours is not None and ours["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/api:1.2.3"


def test_a_workload_forging_our_owner_reference_is_replaced_not_adopted(env: Env) -> None:
    version = env.dynamic_version("api-v1", "api")
    # An editor races the operator: after the version got its id, a forged workload appears.
    forged_labels: dict[str, str] = {}

    def forge(**_: Any) -> None:
        current = env.get("api-v1")
        if env.kube.peek(WORKLOADS, NS, VERIFY) is None and current["status"].get("id"):
            forged_labels["deploy.miosa.io/version-id"] = current["status"]["id"]
            owner = {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "name": "api-v1",
                "uid": version["metadata"]["uid"],
                "controller": True,
            }
            env.kube.create_object("Deployment", NS, foreign_workload(labels=forged_labels, ownerReferences=[owner]))
            env.kube.mark_available(NS, VERIFY)

    env.kube.inject("get_object", forge, times=1)
    assert isinstance(env.step("api-v1"), Retry)
    ours = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert ours is not None
    assert ours["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/api:1.2.3"
    assert env.get("api-v1")["status"]["ownedObjects"][0]["uid"] == ours["metadata"]["uid"]
    assert state(env.get("api-v1")) == "building"  # the forged "available" never counted


def test_an_edited_image_on_our_workload_is_put_back(env: Env) -> None:
    start(env)
    workload = env.kube.objects[(WORKLOADS, NS, VERIFY)]
    workload["spec"]["template"]["spec"]["containers"][0]["image"] = "attacker.example/always-ready:1"
    workload["spec"]["template"]["spec"]["containers"][0]["command"] = ["/bin/true"]
    assert isinstance(env.step("api-v1"), Retry)
    container = env.kube.peek(WORKLOADS, NS, VERIFY)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["image"] == "registry.example/api:1.2.3" and container["command"] == ["/app/server"]
    added = env.kube.objects[(WORKLOADS, NS, VERIFY)]["spec"]["template"]["spec"]
    added["serviceAccountName"] = "powerful"
    assert isinstance(env.step("api-v1"), Retry)
    assert "serviceAccountName" not in env.kube.peek(WORKLOADS, NS, VERIFY)["spec"]["template"]["spec"]  # type: ignore[index]


def test_an_adopted_foreign_pod_does_not_pass_the_gate(env: Env) -> None:
    start(env)
    env.kube.mark_available(NS, VERIFY)
    foreign = [{"name": "app", "image": "attacker.example/always-ready:1"}]
    add_pod(env, name="sneaky", scheduled_at=env.clock(), running_since=env.clock(), ready=True, containers=foreign)
    assert isinstance(env.step("api-v1"), Retry)
    stalled = condition(env.get("api-v1"), "Stalled")
    assert stalled["reason"] == "NameConflict" and "'sneaky'" in stalled["message"]
    assert state(env.get("api-v1")) == "building"
    env.kube.remove("v1/pods", NS, "sneaky")
    add_pod(env, scheduled_at=env.clock(), running_since=env.clock(), ready=True)
    assert env.step("api-v1") == VersionState.READY


def test_a_crash_between_creating_and_recording_the_workload_recreates_it(env: Env) -> None:
    env.dynamic_version("api-v1", "api")
    recording = lambda plural, status=None, **_: plural == meta.VERSION_PLURAL and "ownedObjects" in (status or {})  # noqa: E731
    env.kube.inject("patch_status", SimulatedCrash("killed"), when=recording)
    with pytest.raises(SimulatedCrash):
        env.step("api-v1")
    unrecorded = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert unrecorded is not None and not env.get("api-v1")["status"].get("ownedObjects")
    assert isinstance(env.step("api-v1"), Retry)
    ours = env.kube.peek(WORKLOADS, NS, VERIFY)
    assert ours is not None and ours["metadata"]["uid"] != unrecorded["metadata"]["uid"]
    assert env.get("api-v1")["status"]["ownedObjects"][0]["uid"] == ours["metadata"]["uid"]
    env.kube.mark_available(NS, VERIFY)
    assert env.step("api-v1") == VersionState.READY


# =========================================================================== operator faults


def test_transient_api_errors_during_the_gate_are_retried(env: Env) -> None:
    env.dynamic_version("api-v1", "api")
    env.kube.inject("create_object", TransientApiError("timeout", status=0))
    with pytest.raises(TransientApiError):
        env.step("api-v1")
    assert state(env.get("api-v1")) == "building"
    assert isinstance(env.step("api-v1"), Retry)
    env.kube.mark_available(NS, VERIFY)
    env.kube.inject("delete_object", TransientApiError("timeout", status=504))
    with pytest.raises(TransientApiError):
        env.step("api-v1")
    assert state(env.get("api-v1")) == "building"
    assert env.step("api-v1") == VersionState.READY
    assert env.kube.peek(WORKLOADS, NS, VERIFY) is None
    assert len([c for c in env.kube.calls_to("create_object") if c.error is None]) == 1


def test_api_errors_are_shown_on_the_version_and_never_blamed_on_it(env: Env) -> None:
    from miosa_operator.kube.client import ApiError

    start(env)
    env.kube.inject("list_pods", TransientApiError("503 Service Unavailable", status=503))
    with pytest.raises(Retry) as waiting:  # listing pods is retried within the gate's own loop
        env.controller.reconcile(env.get("api-v1"))
    assert not waiting.value.planned
    env.kube.inject("get_object", TransientApiError("etcdserver: request timed out", status=500))
    with pytest.raises(TransientApiError):
        env.controller.reconcile(env.get("api-v1"))
    version = env.get("api-v1")
    reconciling = condition(version, "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "ApiUnavailable") and "timed out" in reconciling["message"]
    assert state(version) == "building"
    env.kube.inject("get_object", ApiError('403 Forbidden: deployments.apps "api-v1-verify" is forbidden', status=403))
    with pytest.raises(ApiError):
        env.controller.reconcile(env.get("api-v1"))
    stalled = condition(env.get("api-v1"), "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ApiUnavailable") and "forbidden" in stalled["message"]
    env.kube.mark_available(NS, VERIFY)
    assert env.step("api-v1") == VersionState.READY
