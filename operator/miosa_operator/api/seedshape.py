"""The seed's JSON shapes (snake_case) built from our objects: plain dicts, no dependencies.

One implementation for the kubectl plugin's ``-o json`` (the light plugin package ships this
module; it has no pydantic) and the HTTP API, whose response models (``api.seed``) validate
exactly these dicts.  How the seed's fields map onto the object:

* ids, number, state and the canonical artifact come from ``status`` (written by the
  operator); attribution, source and runtime from the frozen ``spec``; ``created_at`` is
  ``metadata.creationTimestamp``; ``updated_at`` is the latest status timestamp or condition
  transition (the object has no such field);
* the seed's fields come first, in the seed's order; extra keys come last and only add
  facts: ``name`` (the object to pass to kubectl), ``runtime_args`` (the seed has no place
  for container args), ``artifacts_collected_at`` (retention) and ``published_by``;
* ``created_by`` is what the publisher *claimed* (``spec.attribution.createdBy``; the HTTP
  API sets it to the authenticated caller); ``published_by`` is the Kubernetes user that
  created the object, recorded by the API server itself (``deploy.miosa.io/published-by``,
  set at creation by an admission policy and never changed after);
* timestamps are RFC 3339 UTC with a ``Z`` and second precision, like the seed and like
  Kubernetes' own ``metav1.Time``, whatever precision or offset the source used.
"""

from __future__ import annotations

from .meta import ANNOTATION_PUBLISHED_BY
from .times import parse_time, rfc3339
from .types import Obj

_STATUS_TIMES = ("readyAt", "promotedAt", "archivedAt", "artifactsCollectedAt")


def _manifest(status: Obj) -> Obj | None:
    manifest = status.get("artifactManifest")
    if not manifest:
        return None
    return {"files": manifest.get("files"), "total_bytes": manifest.get("totalBytes"), "entrypoint": manifest.get("entrypoint")}


def updated_at(body: Obj) -> str | None:
    """Latest of creation, the status timestamps and the conditions' transitions."""
    status = body.get("status") or {}
    candidates = [(body.get("metadata") or {}).get("creationTimestamp")]
    candidates += [status.get(key) for key in _STATUS_TIMES]
    candidates += [c.get("lastTransitionTime") for c in status.get("conditions") or []]
    moments = [m for m in (parse_time(c) for c in candidates) if m is not None]
    return rfc3339(max(moments)) if moments else None


def seed_version(body: Obj) -> Obj:
    """A DeploymentVersion object as the seed's Version JSON (see the module docstring)."""
    metadata, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    attribution, source = spec.get("attribution") or {}, spec.get("source") or {}
    runtime = spec.get("runtime") or {}
    return {
        "id": status.get("id"),
        "deployment_id": status.get("deploymentId"),
        # The tenant is the namespace; a version not yet seen by the operator has no tenantId.
        "tenant_id": status.get("tenantId") or metadata.get("namespace"),
        "created_by": attribution.get("createdBy"),
        "external_workspace_id": attribution.get("externalWorkspaceId"),
        "external_user_id": attribution.get("externalUserId"),
        "external_project_id": attribution.get("externalProjectId"),
        "source_sandbox_id": source.get("sandboxId"),
        "build_id": source.get("buildId"),
        "version_number": status.get("versionNumber"),
        "kind": spec.get("kind"),
        "state": status.get("state"),
        "artifact_uri": status.get("artifactUri"),
        "artifact_manifest": _manifest(status),
        "artifact_sha256": status.get("artifactSha256"),
        "runtime_image": runtime.get("image"),
        "runtime_command": runtime.get("command"),
        "runtime_port": runtime.get("port"),
        "health_check_path": runtime.get("healthCheckPath"),
        # The operator's build log; an external build's log when the operator wrote none (yet).
        "build_log_uri": status.get("buildLogUri") or (spec.get("buildLog") or {}).get("uri"),
        "metadata": dict(spec.get("metadata") or {}),
        "promoted_at": rfc3339(status.get("promotedAt")),
        "archived_at": rfc3339(status.get("archivedAt")),
        "created_at": rfc3339(metadata.get("creationTimestamp")),
        "updated_at": updated_at(body),
        "name": metadata.get("name"),
        "runtime_args": runtime.get("args"),
        "artifacts_collected_at": rfc3339(status.get("artifactsCollectedAt")),
        "published_by": (metadata.get("annotations") or {}).get(ANNOTATION_PUBLISHED_BY),
    }


def history_entries(status: Obj) -> list[Obj]:
    """status.history (stored oldest first) as plain rows, newest first."""
    rows = [
        {
            "time": rfc3339(entry.get("time")),
            "action": entry.get("action"),
            "version": entry.get("version"),
            "number": entry.get("versionNumber"),
            "actor": entry.get("actor") or "",
            "reason": entry.get("reason") or "",
        }
        for entry in status.get("history") or []
    ]
    return rows[::-1]
