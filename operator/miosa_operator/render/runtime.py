"""The live workload of a Deployment: an apps/v1 Deployment and a Service.

* dynamic: the version's frozen runtime (image, command, port, env, readiness probe on its
  health path), rendered by the same function as the health gate's verification workload.
* static: a static server.  An init container runs ``miosa-operator fetch``, which downloads
  the canonical release, verifies its sha256 and unpacks it into an emptyDir (a tampered
  artifact never gets served); the server container then serves it, ready on ``/healthz``.

The version id sits in the pod template's annotations, so promoting another version always
rolls the pods, and a hash of the rendered spec sits on the workload so the controller
patches only when something changed.  Rollouts surge and never take a ready pod away
(``maxUnavailable: 0``): a new version that cannot start leaves the old one serving, which
is what makes an automatic revert safe.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..api import meta
from ..api.models import Deployment, DeploymentVersion, VersionKind
from .names import bounded
from .workloads import ANNOTATION_VERSION_ID, runtime_container

Obj = dict[str, Any]

LABEL_APP = f"{meta.GROUP}/app"
ANNOTATION_RENDERED_HASH = f"{meta.GROUP}/rendered-hash"
SITE_DIR = "/srv/site"


@dataclass(frozen=True)
class StaticServer:
    """How static pods reach the artifact store (operator-wide settings)."""

    image: str
    store_env: tuple[tuple[str, str], ...] = ()  # non-secret settings, e.g. MIOSA_S3_ENDPOINT
    credentials_secret: str | None = None  # Secret with MIOSA_S3_ACCESS_KEY_ID/…, mounted as env


def workload_name(deployment: Deployment) -> str:
    return bounded(deployment.metadata.name)


def selector(deployment: Deployment) -> dict[str, str]:
    return {LABEL_APP: workload_name(deployment)}


def _owner(deployment: Deployment) -> Obj:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": meta.DEPLOYMENT_KIND,
        "name": deployment.metadata.name,
        "uid": deployment.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def serving_port(deployment: Deployment, version: DeploymentVersion) -> int:
    if version.spec.kind == VersionKind.DYNAMIC and version.spec.runtime:
        return version.spec.runtime.port
    return deployment.spec.static.port if deployment.spec.static else 8080


def static_pod_spec(deployment: Deployment, version: DeploymentVersion, server: StaticServer) -> Obj:
    status = version.status
    assert status.artifact_uri and status.artifact_sha256, "only ready versions are rendered"
    entrypoint = status.artifact_manifest.entrypoint if status.artifact_manifest else "index.html"
    port = serving_port(deployment, version)
    image = (deployment.spec.static.image if deployment.spec.static else None) or server.image
    env: list[Obj] = [{"name": k, "value": v} for k, v in server.store_env]
    env_from = [{"secretRef": {"name": server.credentials_secret, "optional": True}}] if server.credentials_secret else []
    mount = [{"name": "site", "mountPath": "/srv"}]
    fetch: Obj = {
        "name": "fetch",
        "image": image,
        "command": ["miosa-operator", "fetch", "--uri", status.artifact_uri, "--sha256", status.artifact_sha256, "--dest", SITE_DIR],
        "env": env,
        "volumeMounts": mount,
    }
    if env_from:
        fetch["envFrom"] = env_from
    return {
        "automountServiceAccountToken": False,
        "initContainers": [fetch],
        "containers": [
            {
                "name": "server",
                "image": image,
                "command": ["miosa-operator", "serve", "--dir", SITE_DIR, "--port", str(port), "--entrypoint", entrypoint],
                "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 2},
                "volumeMounts": mount,
            }
        ],
        "volumes": [{"name": "site", "emptyDir": {}}],
    }


def dynamic_pod_spec(version: DeploymentVersion) -> Obj:
    assert version.spec.runtime is not None
    return {"automountServiceAccountToken": False, "containers": [runtime_container(version.spec.runtime)]}


def live_workload(deployment: Deployment, version: DeploymentVersion, server: StaticServer) -> Obj:
    labels = selector(deployment)
    if version.spec.kind == VersionKind.STATIC:
        pod_spec = static_pod_spec(deployment, version, server)
    else:
        pod_spec = dynamic_pod_spec(version)
    if deployment.spec.node_selector:
        pod_spec["nodeSelector"] = dict(deployment.spec.node_selector)
    spec = {
        "replicas": deployment.spec.replicas,
        "progressDeadlineSeconds": deployment.spec.rollout.progress_deadline_seconds,
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": {**labels, meta.LABEL_VERSION_NUMBER: str(version.status.version_number or 0)},
                "annotations": {ANNOTATION_VERSION_ID: version.status.id or ""},
            },
            "spec": pod_spec,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": workload_name(deployment),
            "namespace": deployment.metadata.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_RENDERED_HASH: rendered_hash(spec), ANNOTATION_VERSION_ID: version.status.id or ""},
            "ownerReferences": [_owner(deployment)],
        },
        "spec": spec,
    }


def live_service(deployment: Deployment, port: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": workload_name(deployment),
            "namespace": deployment.metadata.namespace,
            "labels": selector(deployment),
            "ownerReferences": [_owner(deployment)],
        },
        "spec": {
            "selector": selector(deployment),
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
        },
    }


def rendered_hash(spec: Obj) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def workload_version_id(workload: Obj | None) -> str | None:
    if not workload:
        return None
    return (workload["spec"]["template"]["metadata"].get("annotations") or {}).get(ANNOTATION_VERSION_ID)


def rolled_out(workload: Obj | None, version_id: str, replicas: int) -> bool:
    """The workload runs ``version_id`` on every replica, all of them available."""
    if not workload or workload_version_id(workload) != version_id:
        return False
    status = workload.get("status") or {}
    if status.get("observedGeneration", 0) < workload["metadata"].get("generation", 0):
        return False
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    return updated >= replicas and available >= replicas and total <= replicas
