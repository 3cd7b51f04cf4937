"""The live workload of a Deployment: an apps/v1 Deployment and a Service.

* dynamic: the version's frozen runtime (image, command, port, env, readiness probe on its
  health path), rendered by the same function as the health gate's verification workload.
* static: a static server.  An init container runs ``miosa-operator fetch`` from the
  operator's own image (never a tenant's), which downloads the canonical release from the
  operator's artifact endpoint, verifies its sha256 and every member with the operator's
  ingestion limits and unpacks it into an emptyDir (a tampered artifact never gets served);
  the server container then serves it, ready on ``/healthz``.  The pod holds no store
  credentials: the init container alone mounts a projected ServiceAccount token whose
  audience is the artifact endpoint (useless against the API server), and the endpoint
  serves a token of namespace N only N's releases (``serve.artifacts``).  The pod gets no
  API token at all.  Every container meets Pod Security "restricted" (``render.security``),
  with memory limits and an emptyDir ``sizeLimit`` derived from the release's size.

Every Deployment setting that applies to pods (node selector, tolerations, image pull
secrets, resources) is added by ``render.pods.apply_common``, for static and dynamic pods
alike.  The workload, its Service and its optional PodDisruptionBudget carry an
ownerReference to the Deployment and its id label (``deploy.miosa.io/deployment-id``):
``domain.ownership`` uses both, with the uid recorded at creation, to tell them from
same-named objects somebody else made.

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

from ..api import meta
from ..api.meta import ANNOTATION_RENDERED_HASH, ANNOTATION_VERSION_ID, LABEL_APP, LABEL_DEPLOYMENT_ID
from ..api.models import Deployment, DeploymentVersion, VersionKind
from ..api.types import Obj
from .names import bounded
from .pods import PodDefaults, apply_common, dynamic_pod_spec
from .security import NONROOT_UID, container_security_context, pod_security_context

SITE_DIR = "/srv/site"


MiB = 1 << 20
TOKEN_DIR = "/var/run/secrets/miosa/artifacts"
TOKEN_SECONDS = 600
"""Lifetime of the pod's endpoint token: the API server's minimum; the kubelet renews it."""
SERVER_CACHE_BYTES = 32 * MiB
"""Memory the static server may spend keeping small files (``serve --cache-bytes``)."""


@dataclass(frozen=True)
class StaticServer:
    """How static pods get their release (operator-wide settings)."""

    image: str
    """The operator's own image: runs ``fetch`` always, ``serve`` unless the Deployment names a server image."""
    artifacts_url: str
    """The artifact endpoint as pods reach it (``MIOSA_ARTIFACTS_URL``)."""
    audience: str = "miosa-artifacts"
    limits_env: tuple[tuple[str, str], ...] = ()
    """The operator's ingestion limits as ``MIOSA_MAX_*`` variables: fetch checks with exactly these."""


def workload_name(deployment: Deployment) -> str:
    return bounded(deployment.metadata.name)


def selector(deployment: Deployment) -> dict[str, str]:
    return {LABEL_APP: workload_name(deployment)}


def object_labels(deployment: Deployment) -> dict[str, str]:
    """Labels of the workload, Service and budget: the selector plus the Deployment's id."""
    return {**selector(deployment), LABEL_DEPLOYMENT_ID: deployment.status.id or ""}


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
    assert status.artifact_uri and status.artifact_sha256 and status.id and status.deployment_id, "only ready versions"
    manifest = status.artifact_manifest
    entrypoint = manifest.entrypoint if manifest else "index.html"
    port = serving_port(deployment, version)
    image = (deployment.spec.static.image if deployment.spec.static else None) or server.image
    release = f"{version.metadata.namespace}/{status.deployment_id}/{status.id}"
    site = {"name": "site", "mountPath": "/srv"}
    fetch: Obj = {
        "name": "fetch",
        "image": server.image,  # the only container that touches the release: never the tenant's image
        "command": ["miosa-operator", "fetch", "--release", release, "--sha256", status.artifact_sha256, "--dest", SITE_DIR],
        "env": [
            {"name": "MIOSA_ARTIFACTS_URL", "value": server.artifacts_url},
            {"name": "MIOSA_ARTIFACTS_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"},
            *({"name": name, "value": value} for name, value in server.limits_env),
        ],
        "volumeMounts": [site, {"name": "artifacts-token", "mountPath": TOKEN_DIR, "readOnly": True}],
        "securityContext": container_security_context(),
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        # A refused release says why in the pod's status (`kubectl describe`), not only in a
        # log the kubelet may already have collected by the time someone looks.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    probe = {"httpGet": {"path": "/healthz", "port": port}}
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(run_as_user=NONROOT_UID),
        "initContainers": [fetch],
        "containers": [
            {
                "name": "server",
                "image": image,
                "command": [
                    "miosa-operator",
                    "serve",
                    "--dir",
                    SITE_DIR,
                    "--port",
                    str(port),
                    "--entrypoint",
                    entrypoint,
                    "--cache-bytes",
                    str(SERVER_CACHE_BYTES),
                ],
                "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                "readinessProbe": {**probe, "periodSeconds": 2},
                "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
                "volumeMounts": [{**site, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}],
                "securityContext": container_security_context(),
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"memory": f"{(128 * MiB + SERVER_CACHE_BYTES) // MiB}Mi"},
                },
            }
        ],
        "volumes": [
            {
                "name": "site",
                "emptyDir": {
                    "sizeLimit": site_size_limit(manifest.files if manifest else 0, manifest.total_bytes if manifest else 0)
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
            {
                "name": "artifacts-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "audience": server.audience,
                                "expirationSeconds": TOKEN_SECONDS,
                                "path": "token",
                            }
                        }
                    ]
                },
            },
        ],
    }


def site_size_limit(files: int, total_bytes: int) -> str:
    """The emptyDir holding the unpacked release: twice the tree (a re-run fetch unpacks the new
    tree before removing the old), each file rounded up to 4 KiB blocks, plus 16 MiB slack."""
    tree = total_bytes + files * 4096
    return f"{(2 * tree + 16 * MiB + MiB - 1) // MiB}Mi"


def live_workload(
    deployment: Deployment, version: DeploymentVersion, server: StaticServer, defaults: PodDefaults | None = None
) -> Obj:
    labels = selector(deployment)
    if version.spec.kind == VersionKind.STATIC:
        pod_spec = apply_common(static_pod_spec(deployment, version, server), deployment)
    else:
        pod_spec = dynamic_pod_spec(version, deployment, defaults or PodDefaults())
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
            "labels": object_labels(deployment),
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
            "labels": object_labels(deployment),
            "ownerReferences": [_owner(deployment)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(deployment),
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
        },
    }


def disruption_budget(deployment: Deployment) -> Obj | None:
    """The policy/v1 PodDisruptionBudget ``spec.podDisruptionBudget`` asks for, or None."""
    budget = deployment.spec.pod_disruption_budget
    if budget is None:
        return None
    spec: Obj = {"selector": {"matchLabels": selector(deployment)}}
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    if budget.max_unavailable is not None:
        spec["maxUnavailable"] = budget.max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": workload_name(deployment),
            "namespace": deployment.metadata.namespace,
            "labels": object_labels(deployment),
            "ownerReferences": [_owner(deployment)],
        },
        "spec": spec,
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
