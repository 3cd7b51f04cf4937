"""The verification workload: a dynamic version's short-lived apps/v1 Deployment, which the
health gate (``controllers.health_gate``) must see available before the version is ready.

Its pod is the live pod (``render.pods.dynamic_pod_spec``); only names, labels and replicas
differ.  It is owned by the version, so it is garbage-collected with it.
"""

from __future__ import annotations

from ..api import meta
from ..api.meta import ANNOTATION_VERSION_ID, LABEL_ROLE, LABEL_VERSION, LABEL_VERSION_ID
from ..api.models import Deployment, DeploymentVersion
from .names import bounded
from .pods import Obj, PodDefaults, dynamic_pod_spec, owner_reference


def verification_name(version: DeploymentVersion) -> str:
    return bounded(version.metadata.name, "verify")


def verification_workload(
    version: DeploymentVersion,
    deadline_seconds: int,
    deployment: Deployment | None = None,
    defaults: PodDefaults | None = None,
) -> Obj:
    """The short-lived workload of a dynamic version's health gate."""
    name = verification_name(version)
    labels = {LABEL_ROLE: "verify", LABEL_VERSION: bounded(version.metadata.name)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": version.metadata.namespace,
            "labels": {**labels, LABEL_VERSION_ID: version.status.id or ""},
            "annotations": {ANNOTATION_VERSION_ID: version.status.id or ""},
            "ownerReferences": [owner_reference(version, meta.VERSION_KIND)],
        },
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": max(deadline_seconds, 1),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": dynamic_pod_spec(version, deployment, defaults or PodDefaults()),
            },
        },
    }
