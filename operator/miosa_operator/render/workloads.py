"""apps/v1 Deployments rendered from a version's frozen runtime config.

One function renders the container of a dynamic version, so the verification workload of
the health gate and the live workload run exactly the same thing with the same readiness
probe; only names, labels and replicas differ.
"""

from __future__ import annotations

from typing import Any

from ..api import meta
from ..api.models import DeploymentVersion, Runtime
from .names import bounded

Obj = dict[str, Any]

LABEL_ROLE = f"{meta.GROUP}/role"
LABEL_VERSION = f"{meta.GROUP}/version"
ANNOTATION_VERSION_ID = f"{meta.GROUP}/version-id"


def runtime_container(runtime: Runtime, name: str = "app") -> Obj:
    container: Obj = {
        "name": name,
        "image": runtime.image,
        "ports": [{"name": "http", "containerPort": runtime.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": runtime.health_check_path, "port": runtime.port},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
    }
    if runtime.command:
        container["command"] = list(runtime.command)
    if runtime.args:
        container["args"] = list(runtime.args)
    if runtime.env:
        container["env"] = [{"name": e.name, "value": e.value} for e in runtime.env]
    return container


def owner_reference(obj: DeploymentVersion | Any, kind: str) -> Obj:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": kind,
        "name": obj.metadata.name,
        "uid": obj.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def verification_name(version: DeploymentVersion) -> str:
    return bounded(version.metadata.name, "verify")


def verification_workload(version: DeploymentVersion, deadline_seconds: int) -> Obj:
    """The short-lived workload of a dynamic version's health gate."""
    assert version.spec.runtime is not None, "dynamic versions carry a runtime"
    name = verification_name(version)
    labels = {LABEL_ROLE: "verify", LABEL_VERSION: bounded(version.metadata.name)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": version.metadata.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_VERSION_ID: version.status.id or ""},
            "ownerReferences": [owner_reference(version, meta.VERSION_KIND)],
        },
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": max(deadline_seconds, 1),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [runtime_container(version.spec.runtime)],
                },
            },
        },
    }


def is_available(workload: Obj | None, replicas: int = 1) -> bool:
    """All wanted replicas of the current generation are updated and ready."""
    if not workload:
        return False
    status = workload.get("status") or {}
    observed = status.get("observedGeneration", 0) >= workload["metadata"].get("generation", 0)
    updated = (status.get("updatedReplicas") or 0) >= replicas
    ready = (status.get("availableReplicas") or 0) >= replicas
    return observed and updated and ready
