"""The seed's JSON shapes (snake_case), built from our objects: one implementation for all.

The HTTP API (``miosa-operator api``) answers with these models, its OpenAPI document is
generated from them, and the kubectl plugin prints them with ``-o json``; so a platform
that consumed the hosted API can consume either unchanged.

Design decisions:

* ``SeedVersion`` has the seed's fields in the seed's order.  Extra keys come last and only
  add facts: ``name`` (the object to pass to kubectl), ``runtime_args`` (the seed has no
  place for container args), ``artifacts_collected_at`` (retention) and ``published_by``.
* ``created_by`` is what the publisher *claimed* (``spec.attribution.createdBy``; the HTTP
  API sets it to the authenticated caller); ``published_by`` is the Kubernetes user that
  created the object, recorded by the API server itself (``deploy.miosa.io/published-by``,
  set at creation by an admission policy and never changed after).
* Ids, number, state and the canonical artifact come from ``status`` (written by the
  operator); attribution, source and runtime from the frozen ``spec``; ``created_at`` is
  ``metadata.creationTimestamp``; ``updated_at`` is the latest status timestamp or
  condition transition (the object has no such field).
* Timestamps are RFC 3339 UTC with a ``Z`` and second precision, like the seed and like
  Kubernetes' own ``metav1.Time``, whatever precision or offset the source used.
* Builders take the raw object (a dict as the API server sends it), never fail on a
  missing part, and do no I/O: a version the operator has not seen yet still has a shape.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .meta import ANNOTATION_PUBLISHED_BY

Obj = dict[str, Any]

_STATUS_TIMES = ("readyAt", "promotedAt", "archivedAt", "artifactsCollectedAt")
TIMESTAMP = "RFC 3339 UTC timestamp with second precision, e.g. 2026-05-14T18:20:00Z."


# ---------------------------------------------------------------------------- time


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string (any offset, optional fraction)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def rfc3339(value: Any) -> str | None:
    moment = parse_time(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


# ---------------------------------------------------------------------------- models


class SeedModel(BaseModel):
    """snake_case on the wire; keys always present (null when unknown), as in the seed."""

    model_config = ConfigDict(extra="forbid")

    def seed(self) -> Obj:
        return self.model_dump(mode="json")


class ArtifactManifestView(SeedModel):
    files: int | None = Field(description="Regular files in the release.")
    total_bytes: int | None = Field(description="Sum of their sizes.")
    entrypoint: str | None = Field(description="The file served for '/'.")


class SeedVersion(SeedModel):
    """A Deployment Version in the seed's shape."""

    id: str | None = Field(description="ver_ + ULID; null until the operator has seen the version.", examples=["ver_01HZ5V7R9Q2K8M3N4P6T0W1XYZ"])
    deployment_id: str | None = Field(description="dep_ + ULID of its Deployment.")
    tenant_id: str | None = Field(description="The tenant: the Kubernetes namespace.")
    created_by: str | None = Field(description="Who published it (for the HTTP API: the authenticated caller).")
    external_workspace_id: str | None
    external_user_id: str | None
    external_project_id: str | None
    source_sandbox_id: str | None
    build_id: str | None
    version_number: int | None = Field(description="1, 2, 3 ... per Deployment; null until numbered.")
    kind: str | None = Field(description="static or dynamic.")
    state: str | None = Field(description="created, building, ready, failed or archived; null until first seen.")
    artifact_uri: str | None = Field(description="The canonical stored release.")
    artifact_manifest: ArtifactManifestView | None
    artifact_sha256: str | None
    runtime_image: str | None
    runtime_command: list[str] | None
    runtime_port: int | None
    health_check_path: str | None
    build_log_uri: str | None
    metadata: dict[str, str]
    promoted_at: str | None = Field(description=TIMESTAMP)
    archived_at: str | None = Field(description=TIMESTAMP)
    created_at: str | None = Field(description=TIMESTAMP)
    updated_at: str | None = Field(description=TIMESTAMP)
    name: str | None = Field(description="Name of the DeploymentVersion object (for kubectl).")
    runtime_args: list[str] | None
    artifacts_collected_at: str | None = Field(description=TIMESTAMP)
    published_by: str | None = Field(description="The Kubernetes user that created the object (recorded by the API server).")


class HistoryRow(SeedModel):
    """One completed promotion of a Deployment (status.history)."""

    time: str | None = Field(description=TIMESTAMP)
    action: str | None = Field(description="promote, rollback, auto or revert.")
    version: str | None = Field(description="Name of the DeploymentVersion that went live.")
    number: int | None = Field(description="Its version number.")
    actor: str = Field(description="Who asked for it (the Kubernetes user name), or miosa-operator.")
    reason: str


# ---------------------------------------------------------------------------- builders


def _manifest(status: Obj) -> ArtifactManifestView | None:
    manifest = status.get("artifactManifest")
    if not manifest:
        return None
    return ArtifactManifestView(
        files=manifest.get("files"), total_bytes=manifest.get("totalBytes"), entrypoint=manifest.get("entrypoint")
    )


def updated_at(body: Obj) -> str | None:
    """Latest of creation, the status timestamps and the conditions' transitions."""
    status = body.get("status") or {}
    candidates = [(body.get("metadata") or {}).get("creationTimestamp")]
    candidates += [status.get(key) for key in _STATUS_TIMES]
    candidates += [c.get("lastTransitionTime") for c in status.get("conditions") or []]
    moments = [m for m in (parse_time(c) for c in candidates) if m is not None]
    return rfc3339(max(moments)) if moments else None


def seed_version_model(body: Obj) -> SeedVersion:
    """A DeploymentVersion object as the seed's Version (see the module docstring)."""
    metadata, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    attribution, source = spec.get("attribution") or {}, spec.get("source") or {}
    runtime = spec.get("runtime") or {}
    return SeedVersion(
        id=status.get("id"),
        deployment_id=status.get("deploymentId"),
        # The tenant is the namespace; a version not yet seen by the operator has no tenantId.
        tenant_id=status.get("tenantId") or metadata.get("namespace"),
        created_by=attribution.get("createdBy"),
        external_workspace_id=attribution.get("externalWorkspaceId"),
        external_user_id=attribution.get("externalUserId"),
        external_project_id=attribution.get("externalProjectId"),
        source_sandbox_id=source.get("sandboxId"),
        build_id=source.get("buildId"),
        version_number=status.get("versionNumber"),
        kind=spec.get("kind"),
        state=status.get("state"),
        artifact_uri=status.get("artifactUri"),
        artifact_manifest=_manifest(status),
        artifact_sha256=status.get("artifactSha256"),
        runtime_image=runtime.get("image"),
        runtime_command=runtime.get("command"),
        runtime_port=runtime.get("port"),
        health_check_path=runtime.get("healthCheckPath"),
        # The operator's build log; an external build's log when the operator wrote none (yet).
        build_log_uri=status.get("buildLogUri") or (spec.get("buildLog") or {}).get("uri"),
        metadata=dict(spec.get("metadata") or {}),
        promoted_at=rfc3339(status.get("promotedAt")),
        archived_at=rfc3339(status.get("archivedAt")),
        created_at=rfc3339(metadata.get("creationTimestamp")),
        updated_at=updated_at(body),
        name=metadata.get("name"),
        runtime_args=runtime.get("args"),
        artifacts_collected_at=rfc3339(status.get("artifactsCollectedAt")),
        published_by=(metadata.get("annotations") or {}).get(ANNOTATION_PUBLISHED_BY),
    )


def seed_version(body: Obj) -> Obj:
    """The same as a plain JSON-ready dict, keys in the seed's order."""
    return seed_version_model(body).seed()


def history_rows(status: Obj) -> list[HistoryRow]:
    """status.history (stored oldest first), newest first."""
    rows = [
        HistoryRow(
            time=rfc3339(entry.get("time")),
            action=entry.get("action"),
            version=entry.get("version"),
            number=entry.get("versionNumber"),
            actor=entry.get("actor") or "",
            reason=entry.get("reason") or "",
        )
        for entry in status.get("history") or []
    ]
    return rows[::-1]


def history_entries(status: Obj) -> list[Obj]:
    return [row.seed() for row in history_rows(status)]
