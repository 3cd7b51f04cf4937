"""The seed's shapes as pydantic models: the HTTP API's response models and OpenAPI schemas.

The shapes themselves are built by ``api.seedshape`` (plain dicts, shared with the kubectl
plugin's ``-o json``, which has no pydantic); these models validate exactly those dicts
(``extra="forbid"``: a key added there and not here fails the unit tests), so the API, its
OpenAPI document and the plugin cannot disagree.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .seedshape import history_entries, seed_version
from .types import Obj

TIMESTAMP = "RFC 3339 UTC timestamp with second precision, e.g. 2026-05-14T18:20:00Z."


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

    id: str | None = Field(
        description="ver_ + ULID; null until the operator has seen the version.", examples=["ver_01HZ5V7R9Q2K8M3N4P6T0W1XYZ"]
    )
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


def seed_version_model(body: Obj) -> SeedVersion:
    """A DeploymentVersion object as the seed's Version (``seedshape.seed_version``, validated)."""
    return SeedVersion.model_validate(seed_version(body))


def history_rows(status: Obj) -> list[HistoryRow]:
    """status.history, newest first (``seedshape.history_entries``, validated)."""
    return [HistoryRow.model_validate(row) for row in history_entries(status)]
