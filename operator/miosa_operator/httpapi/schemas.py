"""Request and response models of the HTTP API (snake_case, like the seed).

Versions are ``api.seed.SeedVersion``, the one implementation the plugin prints too.  The
OpenAPI document (``/openapi.json``) is generated from these classes by FastAPI, so a
generated client and the server cannot disagree.  Request bodies forbid unknown fields: a
typo (or an attempt to set ``created_by``) is a 400, not silently ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ..api.seed import HistoryRow, SeedVersion

ExternalId = Annotated[str, Field(min_length=1, max_length=253)]
Reason = Annotated[str, Field(max_length=1024, description="Why; recorded in the deployment's history.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionPage(Strict):
    data: list[SeedVersion] = Field(description="Versions, newest first (highest version_number first).")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Permissions(Strict):
    read: bool = Field(description="deployments:read: list and show versions.")
    promote: bool = Field(description="deployments:write: promote and roll back.")
    publish: bool = Field(description="deployments:write: publish versions.")


class RolloutView(Strict):
    version: str | None
    version_number: int | None
    action: str | None
    started_at: str | None


class ConditionView(Strict):
    status: str | None
    reason: str | None
    message: str | None


class DeploymentView(Strict):
    """A Deployment: what is live, how it is chosen, and what happened."""

    id: str | None = Field(description="dep_ + ULID.")
    name: str
    tenant_id: str = Field(description="The tenant: the Kubernetes namespace.")
    kind: str | None
    promotion_policy: str | None = Field(description="Manual or Auto.")
    promoted_version: str | None = Field(description="Name of the version spec.promotedVersion asks for.")
    live_version: SeedVersion | None = Field(description="The version serving now.")
    last_version_number: int | None
    rollout: RolloutView | None = Field(description="The rollout in progress, if any.")
    ready: ConditionView | None = Field(description="The Deployment's Ready condition.")
    history: list[HistoryRow] = Field(description="Completed promotions, newest first.")
    created_at: str | None
    permissions: Permissions = Field(description="What the caller may do with this deployment.")


class PromoteRequest(Strict):
    reason: Reason | None = None


class RollbackRequest(Strict):
    version_id: str | None = Field(
        default=None, max_length=64, description="ver_ id to roll back to; default: the previous live version."
    )
    reason: Reason | None = None


class PromotionResult(Strict):
    status: str = Field(
        description="live (rolled out, with wait=true), rolling_out, or pending (waiting for the version to be ready)."
    )
    version: SeedVersion
    deployment: DeploymentView


class EnvVarIn(Strict):
    name: str = Field(max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str = Field(default="", max_length=32768)


class RuntimeIn(Strict):
    image: str = Field(min_length=1, max_length=1024)
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=64)
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=256)
    port: int = Field(default=8080, ge=1, le=65535)
    health_check_path: str = Field(default="/", max_length=1024, pattern=r"^/[^\s]*$")
    env: list[EnvVarIn] | None = Field(default=None, max_length=128)


class Attribution(Strict):
    external_workspace_id: ExternalId | None = None
    external_user_id: ExternalId | None = None
    external_project_id: ExternalId | None = None
    source_sandbox_id: ExternalId | None = None
    build_id: ExternalId | None = None
    metadata: dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64
    )


class DynamicPublishRequest(Attribution):
    """Publish a dynamic version: its frozen runtime, and who it is for."""

    runtime: RuntimeIn


class Health(Strict):
    status: str
