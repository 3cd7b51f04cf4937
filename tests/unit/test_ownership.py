"""The ownership rule (``domain.ownership``): which same-named objects the operator may touch."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from miosa_operator.api.models import Deployment, DeploymentVersion
from miosa_operator.domain.ownership import (
    Owner,
    Ownership,
    classify,
    conflict_message,
    pod_runs,
    service_drifted,
    workload_drifted,
)
from miosa_operator.render import live

DEP_ID = "dep_" + "1" * 26
OWNER = Owner(kind="Deployment", name="app", uid="dep-uid", id_label="deploy.miosa.io/deployment-id", id_value=DEP_ID)
CONTROLLER = {"apiVersion": "deploy.miosa.io/v1alpha1", "kind": "Deployment", "name": "app", "uid": "dep-uid", "controller": True}


def obj(uid: str = "obj-uid", owners: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "app", "uid": uid, "ownerReferences": owners or [], "labels": labels or {}}}


@pytest.mark.parametrize(
    ("candidate", "recorded", "expected"),
    [
        (None, None, Ownership.ABSENT),
        (obj(owners=[CONTROLLER], labels={OWNER.id_label: DEP_ID}), "obj-uid", Ownership.OURS),
        # claims to be ours, but we never recorded creating it: a crash window or a forgery
        (obj(owners=[CONTROLLER], labels={OWNER.id_label: DEP_ID}), None, Ownership.UNVERIFIED),
        (obj(owners=[CONTROLLER], labels={OWNER.id_label: DEP_ID}), "another-uid", Ownership.UNVERIFIED),
        # anything that does not even claim to be ours
        (obj(), None, Ownership.FOREIGN),
        (obj(owners=[CONTROLLER]), "obj-uid", Ownership.FOREIGN),  # the uid alone is not enough either
        (obj(owners=[{**CONTROLLER, "uid": "other"}], labels={OWNER.id_label: DEP_ID}), None, Ownership.FOREIGN),
        (obj(owners=[{**CONTROLLER, "controller": False}], labels={OWNER.id_label: DEP_ID}), None, Ownership.FOREIGN),
        (obj(owners=[CONTROLLER], labels={OWNER.id_label: "dep_2"}), None, Ownership.FOREIGN),
    ],
)
def test_the_ownership_rule(candidate: dict[str, Any] | None, recorded: str | None, expected: Ownership) -> None:
    assert classify(candidate, OWNER, recorded) == expected


def test_a_conflict_says_which_object_and_why() -> None:
    message = conflict_message("Service", obj(owners=[{**CONTROLLER, "kind": "HelmRelease", "name": "shop", "uid": "x"}]), OWNER)
    assert message.startswith("Service 'app' exists and was not created by miosa-operator for Deployment 'app'")
    assert "controlled by HelmRelease 'shop'" in message and "rename or delete it" in message


def rendered() -> dict[str, Any]:
    deployment = Deployment.model_validate(
        {"metadata": {"name": "app", "namespace": "t", "uid": "dep-uid"}, "spec": {"kind": "dynamic"}, "status": {"id": DEP_ID}}
    )
    version = DeploymentVersion.model_validate(
        {
            "metadata": {"name": "app-v1", "namespace": "t"},
            "spec": {"deploymentRef": {"name": "app"}, "kind": "dynamic", "runtime": {"image": "img:1", "healthCheckPath": "/h"}},
            "status": {"id": "ver_" + "1" * 26, "versionNumber": 1, "state": "ready"},
        }
    )
    return live.live_workload(deployment, version, live.StaticServer("x", "http://artifacts"))


def as_stored(body: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores: the rendered object plus its defaults."""
    stored = copy.deepcopy(body)
    pod = stored["spec"]["template"]["spec"]
    pod.update(
        restartPolicy="Always", terminationGracePeriodSeconds=30, dnsPolicy="ClusterFirst", schedulerName="default-scheduler"
    )
    for container in pod["containers"]:
        container.update(
            terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File", imagePullPolicy="IfNotPresent"
        )
        container["readinessProbe"].update(timeoutSeconds=1, successThreshold=1)
        container["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    stored["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = "25%"
    return stored


def test_server_defaults_are_not_drift() -> None:
    assert not workload_drifted(rendered(), as_stored(rendered()))


@pytest.mark.parametrize(
    "edit",
    [
        lambda pod: pod["containers"][0].update(image="evil:1"),
        lambda pod: pod["containers"][0].update(command=["/bin/sh", "-c", "evil"]),
        lambda pod: pod["containers"][0].update(envFrom=[{"secretRef": {"name": "all"}}]),
        lambda pod: pod.update(serviceAccountName="powerful", automountServiceAccountToken=True),
        lambda pod: pod["containers"].append({"name": "sidecar", "image": "evil:1"}),
        lambda pod: pod.update(initContainers=[{"name": "first", "image": "evil:1"}]),
        lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        lambda pod: pod["containers"][0]["readinessProbe"]["httpGet"].update(path="/always-ok"),
    ],
)
def test_edits_of_the_pod_template_are_drift(edit: Any) -> None:
    stored = as_stored(rendered())
    edit(stored["spec"]["template"]["spec"])
    assert workload_drifted(rendered(), stored)


def test_a_removed_id_label_is_drift() -> None:
    stored = as_stored(rendered())
    del stored["metadata"]["labels"]["deploy.miosa.io/deployment-id"]
    assert workload_drifted(rendered(), stored)


def test_a_service_whose_selector_was_edited_has_drifted() -> None:
    deployment = Deployment.model_validate(
        {"metadata": {"name": "app", "namespace": "t", "uid": "u"}, "spec": {"kind": "dynamic"}, "status": {"id": DEP_ID}}
    )
    desired = live.live_service(deployment, 8080)
    stored = copy.deepcopy(desired)
    stored["spec"].update(clusterIP="10.0.0.7", sessionAffinity="None")
    assert not service_drifted(desired, stored)
    stored["spec"]["selector"]["app"] = "theirs"  # an extra key steals traffic too
    assert service_drifted(desired, stored)


def test_a_pod_adopted_by_the_replicaset_must_run_the_rendered_containers() -> None:
    template = rendered()["spec"]["template"]["spec"]
    ours = {"spec": as_stored(rendered())["spec"]["template"]["spec"]}
    assert pod_runs(template, ours)
    theirs = copy.deepcopy(ours)
    theirs["spec"]["containers"][0]["image"] = "evil:1"
    assert not pod_runs(template, theirs)
    theirs = copy.deepcopy(ours)
    theirs["spec"]["containers"][0]["args"] = ["--always-ready"]
    assert not pod_runs(template, theirs)


def test_a_stored_static_workload_has_not_drifted() -> None:
    deployment = Deployment.model_validate(
        {"metadata": {"name": "site", "namespace": "t", "uid": "dep-uid"}, "spec": {"kind": "static"}, "status": {"id": DEP_ID}}
    )
    version = DeploymentVersion.model_validate(
        {
            "metadata": {"name": "site-v1", "namespace": "t"},
            "spec": {
                "deploymentRef": {"name": "site"},
                "kind": "static",
                "artifact": {"uri": "s3://uploads/x.tar", "sha256": "a" * 64},
            },
            "status": {
                "id": "ver_" + "1" * 26,
                "deploymentId": DEP_ID,
                "versionNumber": 1,
                "state": "ready",
                "artifactUri": "s3://r/x",
                "artifactSha256": "b" * 64,
            },
        }
    )
    body = live.live_workload(deployment, version, live.StaticServer("x", "http://artifacts"))
    stored = copy.deepcopy(body)
    pod = stored["spec"]["template"]["spec"]
    pod.update(
        restartPolicy="Always", terminationGracePeriodSeconds=30, dnsPolicy="ClusterFirst", schedulerName="default-scheduler"
    )
    for volume in pod["volumes"]:
        if "projected" in volume:
            volume["projected"]["defaultMode"] = 420
    for container in [*pod["containers"], *pod["initContainers"]]:
        defaults = {"terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
        container.update({**defaults, "imagePullPolicy": "IfNotPresent", **container})  # the server keeps what was set
    assert not workload_drifted(body, stored)
