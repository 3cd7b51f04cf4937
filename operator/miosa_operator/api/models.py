"""The API of deploy.miosa.io/v1alpha1 as pydantic models: the single source of truth.

The CRD YAML under ``crds/`` is generated from these classes (``miosa_operator.api.crdgen``),
so a field, a bound, a description or a validation rule is written once, here.  Rules that
the API server must enforce even while the operator is down (immutability, state edges,
kind-specific fields) are CEL rules attached with ``x-kubernetes-validations``.

Field names are camelCase on the wire (aliases) and snake_case in Python.  Parsing is
lenient about unknown fields (``extra="ignore"``) so an older operator survives a newer
object; the API server's structural schema is what rejects unknown fields from users.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

# ------------------------------------------------------------------ shared pieces

Sha256 = Annotated[
    str,
    Field(
        pattern=r"^[a-f0-9]{64}$",
        min_length=64,
        max_length=64,
        description="SHA-256 digest: 64 lowercase hexadecimal characters.",
    ),
]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
ShortText = Annotated[str, Field(max_length=253)]
ArtifactUri = Annotated[
    str,
    Field(
        max_length=2048,
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|file:///.+)$",
        description="Location of a bundle: s3://bucket/key or file:///absolute/path.",
    ),
]


def rule(expr: str, message: str = "", **extra: Any) -> dict[str, Any]:
    """One CEL validation rule as the API server expects it."""
    out: dict[str, Any] = {"rule": expr}
    if message:
        out["message"] = message
    out.update(extra)
    return out


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, tolerant of unknown fields."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict the API server stores (aliases, no unset/None fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes API convention condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Type of the condition, in CamelCase, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=1024, description="Machine word for the last transition.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation this condition was set for.")


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        description="Current conditions; Ready comes first.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]

# ------------------------------------------------------------------ DeploymentVersion


class VersionKind(StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"


class VersionState(StrEnum):
    CREATED = "created"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"
    ARCHIVED = "archived"


class DeploymentRef(ApiModel):
    name: ObjectName = Field(description="Name of the Deployment (same namespace) this version belongs to.")


class Source(ApiModel):
    """Where the build came from; informational and frozen."""

    sandbox_id: ShortText | None = Field(default=None, description="Sandbox the source was taken from.")
    build_id: ShortText | None = Field(default=None, description="External build that produced the artifact.")
    sha256: Sha256 | None = Field(default=None, description="Hash of the source tree.")


class Artifact(ApiModel):
    uri: ArtifactUri = Field(description="The uploaded bundle (.tar.zst, .tar.gz or .tar).")
    sha256: Sha256 = Field(description="SHA-256 of the uploaded bundle's bytes; ingestion verifies it.")
    entrypoint: str = Field(
        default="index.html",
        max_length=1024,
        pattern=r"^[^/].*$",
        description="File that must exist in the bundle and is served for '/'.",
    )


KeyName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class KeySelector(ApiModel):
    """One key of a Secret or ConfigMap in the version's own namespace."""

    name: ObjectName = Field(description="Name of the Secret or ConfigMap, in the version's namespace.")
    key: KeyName = Field(description="The key whose value becomes the variable's value.")
    optional: bool | None = Field(
        default=None, description="Start without the variable when the object or key is missing (default: wait for it)."
    )


class EnvVarSource(ApiModel):
    """Where a variable's value comes from, resolved by the kubelet in the tenant's namespace, so
    the value never appears in the version's spec (which is immutable and widely readable)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule(
                    "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                    "spec.runtime.env[].valueFrom: set exactly one of secretKeyRef or configMapKeyRef",
                )
            ]
        }
    )

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")


class EnvVar(ApiModel):
    """One environment variable of the container: a literal value, or a reference."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule(
                    "has(self.value) != has(self.valueFrom)",
                    "spec.runtime.env[]: set exactly one of value or valueFrom",
                )
            ]
        }
    )

    name: str = Field(max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name (unique within env).")
    value: str | None = Field(
        default=None, max_length=32768, description="Literal value; plain text, frozen with the version, so never a secret."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="A Secret or ConfigMap key of the tenant's namespace, resolved when pods start."
    )


class Runtime(ApiModel):
    """The frozen runtime of a dynamic version: what runs and how its health is checked."""

    image: str = Field(min_length=1, max_length=1024, description="Container image.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64, description="Entrypoint override (container command)."
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=256, description="Arguments to the command."
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Port the process listens on.")
    health_check_path: str = Field(
        default="/",
        max_length=1024,
        pattern=r"^/[^\s]*$",
        description="HTTP path that answers 2xx when the process is healthy.",
    )
    env: list[EnvVar] | None = Field(default=None, max_length=128, description="Environment variables.")


class BuildLogRef(ApiModel):
    uri: ArtifactUri = Field(description="Log of the external build.")


class Attribution(ApiModel):
    """Who published this version, mirrored into labels for per-customer history."""

    created_by: ShortText | None = Field(default=None, description="User or system that published.")
    external_workspace_id: ShortText | None = Field(default=None, description="End-customer workspace.")
    external_user_id: ShortText | None = Field(default=None, description="End-customer user.")
    external_project_id: ShortText | None = Field(default=None, description="End-customer project.")


IMMUTABLE_SPEC_MESSAGE = "spec is immutable: a DeploymentVersion is frozen at creation; create a new DeploymentVersion instead"


class DeploymentVersionSpec(ApiModel):
    """What a publish froze. Immutable as a whole, enforced by the API server."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule("self == oldSelf", IMMUTABLE_SPEC_MESSAGE),
                rule("self.kind != 'dynamic' || has(self.runtime)", "spec.runtime is required when spec.kind is dynamic"),
                rule(
                    "self.kind != 'static' || !has(self.runtime)",
                    "spec.runtime is forbidden when spec.kind is static (static versions are served from spec.artifact)",
                ),
                rule("self.kind != 'static' || has(self.artifact)", "spec.artifact is required when spec.kind is static"),
            ]
        }
    )

    deployment_ref: DeploymentRef = Field(description="The Deployment this version belongs to.")
    kind: VersionKind = Field(description="static (files served from the artifact) or dynamic (a container).")
    source: Source | None = Field(default=None, description="Provenance of the build.")
    artifact: Artifact | None = Field(default=None, description="The uploaded bundle. Required for static.")
    runtime: Runtime | None = Field(default=None, description="Runtime config. Required for dynamic, forbidden for static.")
    build_log: BuildLogRef | None = Field(default=None, description="Log of an external build, if any.")
    attribution: Attribution | None = Field(default=None, description="External attribution.")
    metadata: dict[str, Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64, description="Free-form string map, frozen with the version."
    )


_EDGES = (
    "(oldSelf.value() == 'created' && self == 'building')"
    " || (oldSelf.value() == 'building' && (self == 'ready' || self == 'failed'))"
    " || (oldSelf.value() == 'ready' && self == 'archived')"
    " || (oldSelf.value() == 'archived' && self == 'ready')"
)
STATE_RULE = rule(
    f"!oldSelf.hasValue() ? self == 'created' : (oldSelf.value() == self || {_EDGES})",
    messageExpression=(
        "'status.state cannot move to ' + self + ' from its current state'"
        " + ' (allowed: first created, then created->building, building->ready|failed,"
        " ready->archived, archived->ready)'"
    ),
    optionalOldSelf=True,
)


class ArtifactManifest(ApiModel):
    files: int = Field(ge=0, description="Number of regular files in the bundle.")
    total_bytes: int = Field(ge=0, description="Sum of the sizes of those files.")
    entrypoint: str = Field(max_length=1024, description="The file served for '/'.")


class BuildAttempts(ApiModel):
    """Ingestion and health-gate attempts, so that a crash loop ends by itself.

    ``running`` is set in the status write that starts an attempt (the one that sets
    ``building`` for the first) and cleared when it ends or the operator stops gracefully;
    finding it set by another operator run means that run died during the attempt.
    """

    running: str | None = Field(
        default=None, max_length=64, description="The operator run holding an attempt in progress, if any."
    )
    interrupted: int = Field(default=0, ge=0, description="Attempts ended by an abnormal operator (or ingestion worker) death.")
    started_at: datetime | None = Field(default=None, description="When the attempt in progress started.")


class NumberClaim(ApiModel):
    """A version number being claimed, and from which Deployment incarnation."""

    number: int = Field(ge=1, description="The number being claimed (at least the one the claim gets).")
    deployment_uid: str = Field(max_length=128, description="metadata.uid of the Deployment it is claimed from.")


class PromotionMark(ApiModel):
    """Which Deployment is rolling a version out, and since when."""

    deployment_uid: str = Field(max_length=128, description="metadata.uid of the Deployment rolling it out.")
    since: datetime = Field(description="When the rollout was decided.")


class OwnedObject(ApiModel):
    """An object the operator created for this one (its uid as the API server returned it)."""

    kind: Literal["Deployment", "Service", "PodDisruptionBudget"] = Field(
        description="apps/v1 Deployment, v1 Service or policy/v1 PodDisruptionBudget."
    )
    name: ObjectName = Field(description="Its name, in the same namespace.")
    uid: str = Field(max_length=128, description="Its metadata.uid.")


OwnedObjects = Annotated[
    list[OwnedObject],
    Field(
        max_length=8,
        description="Objects the operator created for this one. Only these are ever changed or deleted: an object "
        "of the same name that is not listed here is someone else's (NameConflict).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["kind"]},
    ),
]


class DeploymentVersionStatus(ApiModel):
    """Written only by the operator."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule("!has(oldSelf.id) || (has(self.id) && self.id == oldSelf.id)", "status.id is assigned once"),
                rule(
                    "!has(oldSelf.versionNumber) || (has(self.versionNumber) && self.versionNumber == oldSelf.versionNumber)",
                    "status.versionNumber is assigned once",
                ),
                rule("!has(oldSelf.state) || has(self.state)", "status.state cannot be removed"),
                rule(
                    "!has(oldSelf.collectionClaimedAt) || has(self.collectionClaimedAt)",
                    "status.collectionClaimedAt cannot be removed: a claimed version is collected",
                ),
                rule(
                    "!has(self.collectionClaimedAt) || !has(self.promotion)"
                    " || (has(oldSelf.promotion) && self.promotion == oldSelf.promotion)",
                    "status.promotion cannot be set on a version claimed for collection",
                ),
            ]
        }
    )

    id: str | None = Field(default=None, max_length=64, pattern=r"^ver_[0-9A-HJKMNP-TV-Z]{26}$", description="ver_ + ULID.")
    deployment_id: str | None = Field(default=None, max_length=64, description="dep_ + ULID of the Deployment.")
    tenant_id: str | None = Field(default=None, max_length=253, description="Tenant (the namespace).")
    version_number: int | None = Field(default=None, ge=1, description="1, 2, 3 ... per Deployment, gapless.")
    state: VersionState | None = Field(
        default=None,
        description="created, building, ready, failed or archived.",
        json_schema_extra={"x-kubernetes-validations": [STATE_RULE]},
    )
    artifact_uri: str | None = Field(default=None, max_length=2048, description="The canonical stored release.")
    artifact_sha256: Sha256 | None = Field(default=None, description="SHA-256 of the canonical release.")
    artifact_manifest: ArtifactManifest | None = Field(default=None, description="What the release contains.")
    build_log_uri: str | None = Field(
        default=None,
        max_length=2048,
        description="The operator's human-readable build log: a static version's ingestion, a dynamic version's health gate.",
    )
    external_build_log_uri: str | None = Field(
        default=None, max_length=2048, description="The external build's log (spec.buildLog.uri), shown beside buildLogUri."
    )
    ready_at: datetime | None = Field(default=None, description="When the version became ready.")
    promoted_at: datetime | None = Field(default=None, description="When it last went live.")
    archived_at: datetime | None = Field(default=None, description="When it was last promoted out of.")
    artifacts_collected_at: datetime | None = Field(default=None, description="When retention removed its artifacts.")
    build_attempts: BuildAttempts | None = Field(
        default=None, description="Attempts of ingestion or health gate (ends crash loops: IngestionAborted)."
    )
    number_claim: NumberClaim | None = Field(
        default=None,
        description="The number this version is claiming from its Deployment's counter (written before the claim, "
        "removed once versionNumber is set); a re-created Deployment's counter starts above it.",
    )
    collection_claimed_at: datetime | None = Field(
        default=None,
        description="When retention claimed this version for collection (a write with a resourceVersion "
        "precondition, before any artifact is deleted); from then on it can no longer be promoted.",
    )
    promotion: PromotionMark | None = Field(
        default=None,
        description="Set while a Deployment rolls this version out, before the rollout starts; retention never "
        "claims a version that carries it.",
    )
    owned_objects: OwnedObjects | None = None
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation the operator last acted on.")
    conditions: Conditions | None = None


class ObjectMeta(ApiModel):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class DeploymentVersion(ApiModel):
    """An immutable, numbered publish of a Deployment."""

    api_version: Literal["deploy.miosa.io/v1alpha1"] = "deploy.miosa.io/v1alpha1"
    kind: Literal["DeploymentVersion"] = "DeploymentVersion"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DeploymentVersionSpec
    status: DeploymentVersionStatus = Field(default_factory=DeploymentVersionStatus)


# ------------------------------------------------------------------ Deployment


class PromotionPolicy(StrEnum):
    MANUAL = "Manual"
    AUTO = "Auto"


class HistoryAction(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    AUTO = "auto"
    REVERT = "revert"


class RolloutSettings(ApiModel):
    """How a promotion rolls out and what happens when it does not complete."""

    progress_deadline_seconds: int = Field(
        default=300, ge=5, le=3600, description="How long a rollout may take before it counts as failed."
    )
    auto_revert: bool = Field(default=True, description="Revert to the previous live version when a rollout fails.")


class StaticServerSettings(ApiModel):
    """The server that serves static versions' files (Deployments of kind static)."""

    image: str | None = Field(
        default=None,
        max_length=1024,
        description="Image of the server container, which serves the verified tree read-only (the operator's image if "
        "empty). The release is always downloaded and verified by the operator's own image.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Port the static server listens on.")


Quantity = Annotated[
    str,
    Field(
        max_length=64,
        description="A Kubernetes quantity, e.g. 100m, 0.5, 256Mi, 1Gi.",
        json_schema_extra={"x-kubernetes-validations": [rule("isQuantity(self)", "must be a quantity such as 100m or 256Mi")]},
    ),
]
ResourceList = Annotated[
    dict[str, Quantity],
    Field(max_length=8, description="Resource name (cpu, memory, ephemeral-storage, …) to quantity."),
]


class ResourceRequirements(ApiModel):
    """Compute resources of the live (and verification) pods' main container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule(
                    "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
                    " || !isQuantity(self.requests[k]) || !isQuantity(self.limits[k])"
                    " || quantity(self.requests[k]).compareTo(quantity(self.limits[k])) <= 0)",
                    "spec.resources: a request may not exceed its limit",
                )
            ]
        }
    )

    requests: ResourceList | None = Field(default=None, description="What the scheduler reserves.")
    limits: ResourceList | None = Field(default=None, description="What the container may use at most.")


class Toleration(ApiModel):
    """A taint the live and verification pods tolerate (core/v1 Toleration)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule("!has(self.operator) || self.operator != 'Exists' || !has(self.value)", "operator Exists takes no value"),
                rule("has(self.key) || (has(self.operator) && self.operator == 'Exists')", "an empty key needs operator Exists"),
            ]
        }
    )

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty with Exists matches every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Equal (default) or Exists.")
    value: str | None = Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=86400 * 365, description="NoExecute only: how long the pod stays bound after the taint."
    )


class LocalObjectReference(ApiModel):
    name: ObjectName = Field(description="Name of an object in the same namespace.")


def _int_or_percent(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


IntOrPercent = Annotated[
    int | str,
    BeforeValidator(_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "description": "A number of pods or a percentage such as 50%.",
            "x-kubernetes-validations": [
                rule(
                    "type(self) == int ? self >= 0 : self.matches('^[0-9]{1,3}%$')",
                    "must be a non-negative number or a percentage such as 50%",
                )
            ],
        }
    ),
]


class DisruptionBudget(ApiModel):
    """A policy/v1 PodDisruptionBudget for the live pods (node drains keep this many serving)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule(
                    "has(self.minAvailable) != has(self.maxUnavailable)",
                    "spec.podDisruptionBudget: set exactly one of minAvailable or maxUnavailable",
                )
            ]
        }
    )

    min_available: IntOrPercent | None = Field(default=None, description="Pods that must stay available.")
    max_unavailable: IntOrPercent | None = Field(default=None, description="Pods that may be unavailable.")


class PodSecurity(ApiModel):
    """Relaxations of Pod Security "restricted" for dynamic versions' pods, for images that need them.

    Every relaxation is explicit here, reported by the SecurityRelaxed condition and a Warning
    event, and still subject to the namespace's Pod Security admission (a namespace that
    enforces "restricted" refuses a pod that runs as root: the version says so and waits).
    """

    run_as_user: int | None = Field(
        default=None, ge=1, le=2147483647, description="UID to run as, for images whose USER is not numeric."
    )
    allow_root: bool = Field(
        default=False,
        description="Let the image run as root with the runtime's default capabilities (Pod Security baseline).",
    )
    writable_root_filesystem: bool = Field(
        default=False, description="Make the root filesystem writable (otherwise only /tmp is)."
    )


class DeploymentSpec(ApiModel):
    """What should run: the promoted version (or the newest ready one under Auto) and how."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                rule("self.kind == oldSelf.kind", "spec.kind is immutable: create another Deployment for another kind"),
            ]
        }
    )

    kind: VersionKind = Field(description="static or dynamic; versions must match it.")
    promoted_version: str | None = Field(
        default=None, max_length=253, description="Name of the DeploymentVersion to run; empty runs nothing."
    )
    promotion_policy: PromotionPolicy = Field(
        default=PromotionPolicy.MANUAL,
        description="Manual: promotedVersion decides. Auto: the newest ready version goes live.",
    )
    replicas: int = Field(default=1, ge=0, le=100, description="Replicas of the live workload.")
    rollout: RolloutSettings = Field(default_factory=RolloutSettings, description="Rollout settings.")
    static: StaticServerSettings | None = Field(default=None, description="Static server settings.")
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, max_length=32, description="Node labels the live pods must run on."
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Requests and limits of the main container of live and verification pods "
        "(default: the operator's MIOSA_DEFAULT_REQUESTS / MIOSA_DEFAULT_LIMITS for dynamic versions).",
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Taints the live and verification pods tolerate."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets (in this namespace) used to pull the images."
    )
    pod_disruption_budget: DisruptionBudget | None = Field(
        default=None, description="Create a PodDisruptionBudget for the live pods; none when unset."
    )
    pod_security: PodSecurity | None = Field(
        default=None,
        description="Explicit relaxations of Pod Security restricted for dynamic versions (default: none).",
    )


class HistoryEntry(ApiModel):
    """A version that went live: what, when, how and who asked."""

    version: str = Field(max_length=253, description="DeploymentVersion name.")
    version_number: int | None = Field(default=None, ge=1, description="Its status.versionNumber.")
    action: HistoryAction = Field(
        description="promote (a newer version), rollback (an older one), auto (promotionPolicy Auto) "
        "or revert (the operator put this version back after a failed rollout)."
    )
    actor: str = Field(default="", max_length=512, description="Who asked for it.")
    time: datetime = Field(description="When the version went live (the rollout completed or was reverted).")
    reason: str = Field(
        default="",
        max_length=1024,
        description="Why: the deploy.miosa.io/change-cause annotation, or the operator's reason for a revert.",
    )


class RolloutStatus(ApiModel):
    """The rollout in progress, so a restarted operator resumes it with the same deadline."""

    version: str = Field(max_length=253, description="Version being rolled out.")
    version_number: int | None = Field(default=None, ge=1, description="Its status.versionNumber.")
    previous: str | None = Field(default=None, max_length=253, description="Version live before it.")
    action: HistoryAction = Field(description="promote, rollback or auto (recorded in history when it completes).")
    actor: str = Field(default="", max_length=512, description="Who asked for it (the user who changed spec).")
    reason: str = Field(default="", max_length=1024, description="The deploy.miosa.io/change-cause annotation, if any.")
    started_at: datetime = Field(description="When the rollout started; progressDeadlineSeconds counts from here.")


class DeploymentStatus(ApiModel):
    """Written only by the operator: what is live, what is rolling out, and how it went."""

    id: str | None = Field(default=None, max_length=64, pattern=r"^dep_[0-9A-HJKMNP-TV-Z]{26}$", description="dep_ + ULID.")
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation the operator last acted on.")
    live_version: str | None = Field(default=None, max_length=253, description="The version currently serving.")
    live_version_number: int | None = Field(default=None, ge=1, description="Its status.versionNumber.")
    last_version_number: int | None = Field(
        default=None, ge=0, description="Highest version number handed out (numbering counter)."
    )
    pending_numbers: dict[str, int] | None = Field(
        default=None,
        max_length=1000,
        description="Numbers claimed by versions (by uid) whose own status is not written yet, or is and "
        "whose claim waits a few seconds to be released with the next claim (MIOSA_CLAIM_RELEASE_DELAY).",
    )
    history: list[HistoryEntry] | None = Field(default=None, max_length=50, description="Recent promotions, newest last.")
    rollout: RolloutStatus | None = Field(default=None, description="The rollout in progress, if any.")
    reverted_versions: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=20, description="Versions whose rollout failed and was reverted (newest last)."
    )
    reverted_generation: int | None = Field(
        default=None, description="metadata.generation at the last revert; a spec change allows a retry."
    )
    last_retry_token: str | None = Field(
        default=None,
        max_length=512,
        description="The last deploy.miosa.io/retry annotation the operator acted on (`kubectl miosa retry`): each new "
        "value '<version>@<time>' releases that version from revertedVersions, so its rollout is tried again.",
    )
    owned_objects: OwnedObjects | None = None
    conditions: Conditions | None = None


class Deployment(ApiModel):
    """A site or app of an end-customer, whose live version is chosen by promotion."""

    api_version: Literal["deploy.miosa.io/v1alpha1"] = "deploy.miosa.io/v1alpha1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)


# ------------------------------------------------------------------ RetentionPolicy


class RetentionPolicySpec(ApiModel):
    """How long a tenant (namespace) keeps the artifacts of versions that are not live."""

    retain_days: int = Field(
        default=30, ge=0, le=36500, description="Days after a version became ready (never promoted) or archived."
    )
    rollback_window: int = Field(
        default=5, ge=0, le=100, description="The last N versions that were live keep their artifacts regardless of age."
    )
    keep_build_logs: bool = Field(default=True, description="Keep build logs when collecting artifacts.")


class RetentionPolicyStatus(ApiModel):
    """Written only by the operator."""

    last_sweep_at: datetime | None = Field(default=None, description="When the collector last applied this policy.")
    collected: int | None = Field(default=None, ge=0, description="Versions collected in this namespace by the last sweep.")
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation the conditions are for.")
    conditions: Conditions | None = None


class RetentionPolicy(ApiModel):
    api_version: Literal["deploy.miosa.io/v1alpha1"] = "deploy.miosa.io/v1alpha1"
    kind: Literal["RetentionPolicy"] = "RetentionPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RetentionPolicySpec = Field(default_factory=RetentionPolicySpec)
    status: RetentionPolicyStatus = Field(default_factory=RetentionPolicyStatus)
