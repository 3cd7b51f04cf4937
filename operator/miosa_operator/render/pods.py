"""Pods of dynamic versions, and what every pod of a Deployment shares.

One function renders the pod of a dynamic version (``dynamic_pod_spec``), so the
verification workload of the health gate (``render.verification``) and the live workload
(``render.live``) run exactly the same thing,
with the same readiness probe and the same settings of the Deployment; only names, labels
and replicas differ.

**Pod Security "restricted" by default** (``render.security``): non-root, no privilege
escalation, no capabilities, seccomp ``RuntimeDefault``, a read-only root filesystem with a
writable ``/tmp`` (an emptyDir with a ``sizeLimit``), and resource requests and limits (the
Deployment's ``spec.resources``, else the operator's defaults).  ``spec.podSecurity`` may
relax it for an image that needs it; the relaxations are listed by ``relaxations`` so the
Deployment reports them (a condition and an event), and the namespace's Pod Security
admission still decides whether such a pod may run.

**Secrets stay secret**: ``env[].valueFrom`` references a Secret or ConfigMap key of the
tenant's namespace, resolved by the kubelet when the pod starts.

``apply_common`` is the part every pod of a Deployment gets, static servers included:
``nodeSelector``, ``tolerations``, ``imagePullSecrets`` and, when set, ``spec.resources`` on
the main (first) container.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import meta
from ..api.models import Deployment, DeploymentVersion, EnvVar, PodSecurity, Runtime
from ..api.types import Obj
from .security import container_security_context, pod_security_context

TMP_VOLUME = "tmp"


@dataclass(frozen=True)
class PodDefaults:
    """Operator-wide defaults for the pods of dynamic versions (``Settings``)."""

    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "50m", "memory": "64Mi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "512Mi"})
    tmp_size_limit: str = "256Mi"

    @classmethod
    def from_settings(cls, config: Any) -> PodDefaults:
        return cls(dict(config.default_requests), dict(config.default_limits), config.tmp_size_limit)


# ---------------------------------------------------------------------------- containers


def env_var(var: EnvVar) -> Obj:
    if var.value_from is None:
        return {"name": var.name, "value": var.value or ""}
    source = var.value_from
    if source.secret_key_ref is not None:
        return {"name": var.name, "valueFrom": {"secretKeyRef": source.secret_key_ref.wire()}}
    assert source.config_map_key_ref is not None, "the CRD requires one of the two"
    return {"name": var.name, "valueFrom": {"configMapKeyRef": source.config_map_key_ref.wire()}}


def resources(deployment: Deployment | None, defaults: PodDefaults) -> Obj:
    wanted = deployment.spec.resources if deployment else None
    if wanted is None:
        return {"requests": dict(defaults.requests), "limits": dict(defaults.limits)}
    return wanted.wire()


def runtime_container(
    runtime: Runtime, *, name: str = "app", resources: Obj | None = None, security: PodSecurity | None = None
) -> Obj:
    container: Obj = {
        "name": name,
        "image": runtime.image,
        "ports": [{"name": "http", "containerPort": runtime.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": runtime.health_check_path, "port": runtime.port},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": _container_security(security),
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    if resources:
        container["resources"] = resources
    if runtime.command:
        container["command"] = list(runtime.command)
    if runtime.args:
        container["args"] = list(runtime.args)
    if runtime.env:
        container["env"] = [env_var(e) for e in runtime.env]
    return container


def _container_security(security: PodSecurity | None) -> Obj:
    security = security or PodSecurity()
    context = container_security_context(read_only_root=not security.writable_root_filesystem)
    if security.allow_root:
        # Pod Security "baseline": the runtime's default capabilities, any user.
        context.pop("runAsNonRoot")
        context.pop("capabilities")
    return context


def _pod_security(security: PodSecurity | None) -> Obj:
    security = security or PodSecurity()
    if security.allow_root:
        context: Obj = {"seccompProfile": {"type": "RuntimeDefault"}}
        if security.run_as_user is not None:
            context["runAsUser"] = security.run_as_user
        return context
    return pod_security_context(run_as_user=security.run_as_user)


def relaxations(deployment: Deployment) -> list[str]:
    """What ``spec.podSecurity`` relaxes of Pod Security restricted, in words (empty: nothing)."""
    security = deployment.spec.pod_security
    if security is None:
        return []
    found = []
    if security.allow_root:
        found.append("containers may run as root with the default capabilities (spec.podSecurity.allowRoot)")
    if security.writable_root_filesystem:
        found.append("the root filesystem is writable (spec.podSecurity.writableRootFilesystem)")
    return found


# ---------------------------------------------------------------------------- pods


def dynamic_pod_spec(version: DeploymentVersion, deployment: Deployment | None, defaults: PodDefaults) -> Obj:
    """The pod of a dynamic version, under its Deployment's settings."""
    assert version.spec.runtime is not None, "dynamic versions carry a runtime"
    security = deployment.spec.pod_security if deployment else None
    container = runtime_container(version.spec.runtime, resources=resources(deployment, defaults), security=security)
    spec: Obj = {
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(security),
        "containers": [container],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": defaults.tmp_size_limit}}],
    }
    return apply_common(spec, deployment)


def apply_common(pod_spec: Obj, deployment: Deployment | None) -> Obj:
    """What every pod of ``deployment`` gets, static or dynamic (modifies and returns ``pod_spec``)."""
    if deployment is None:
        return pod_spec
    spec = deployment.spec
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in spec.tolerations]
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [s.wire() for s in spec.image_pull_secrets]
    if spec.resources is not None and pod_spec.get("containers"):
        pod_spec["containers"][0]["resources"] = spec.resources.wire()
    return pod_spec


# ---------------------------------------------------------------------------- verification


def owner_reference(obj: DeploymentVersion | Any, kind: str) -> Obj:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": kind,
        "name": obj.metadata.name,
        "uid": obj.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
