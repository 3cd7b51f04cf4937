"""The conditions table: every condition type, condition reason and event reason, as enums.

Part of the API: users, ``kubectl wait``, GitOps health checks and the kubectl plugin read
these words, so they are named constants in one module without imports (the plugin and the
ingestion layer can depend on it cheaply), never string literals in controllers.

**kstatus.** Every object carries the three conditions of the kstatus conventions
(``sigs.k8s.io/cli-utils/pkg/kstatus``), which Flux, Argo CD and ``kubectl wait`` agree on:

* ``Ready`` — the object is what its spec asks for (a version: verified and promotable; a
  Deployment: the version its policy asks for is live).
* ``Reconciling=True`` — the operator is working towards it (kstatus: *InProgress*).
* ``Stalled=True`` — it cannot get there without a person (kstatus: *Failed*): a failed
  version, an unpromotable target, a reverted rollout, or an operator fault that needs an
  administrator (store access denied).

At most one of ``Reconciling``/``Stalled`` is True; both carry the same reason and message
as ``Ready``.  ``domain.conditions.Health`` is the one place that writes them together.

| object | situation | Ready | Reconciling | Stalled |
|---|---|---|---|---|
| version | waiting for its Deployment, being numbered, queued for ingestion, building | False | True | False |
| version | an operator fault being retried (store 5xx, API errors) | False | True | False |
| version | an operator fault a person must fix (store access denied) | False | False | True |
| version | ``ready`` or ``archived`` | True | False | False |
| version | ``failed`` (a fault of the bundle or runtime; terminal) | False | False | True |
| version | artifacts collected by retention (final, kept for audit) | False | False | False |
| Deployment | nothing promoted (a valid steady state) | True | False | False |
| Deployment | waiting for a version to become ready, rolling out | False | True | False |
| Deployment | the asked-for version is live and available | True | False | False |
| Deployment | target failed, unpromotable, rollout reverted, name conflict | False | False | True |
| version | still building, waiting on what a person must fix: a name conflict, unschedulable pods, a quota, a refused pod, a missing Secret | False | False | True |
| RetentionPolicy | accepted, or applied by the last sweep | True | False | False |
| RetentionPolicy | some collections of the last sweep failed (retried at the next) | False | True | False |

``RolloutFailed`` on a Deployment is informational: whether the last rollout failed;
``SecurityRelaxed`` likewise: whether ``spec.podSecurity`` relaxes Pod Security restricted.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    ROLLOUT_FAILED = "RolloutFailed"
    """Deployment: the last rollout failed (True) or completed (False)."""
    SECURITY_RELAXED = "SecurityRelaxed"
    """Deployment: spec.podSecurity relaxes Pod Security restricted (True, with what), or not (False)."""


class Reason(StrEnum):
    """Condition reasons (also the reasons of the events that report them)."""

    # ---- a version on its way (Reconciling)
    PENDING = "Pending"
    """Created; identity assigned, waiting to be numbered."""
    DEPLOYMENT_NOT_FOUND = "DeploymentNotFound"
    """Its Deployment does not exist (yet); waits in ``created``."""
    BUILDING = "Building"
    """Static: the bundle is being verified and stored; dynamic: the health gate runs."""
    INGESTION_QUEUED = "IngestionQueued"
    """Static: waiting for an ingestion slot (a bounded number run at once, a fair share per tenant)."""
    ARTIFACT_PENDING = "ArtifactPending"
    """Static: the bundle is not in the store yet; waits up to the grace period, then ArtifactNotFound."""

    # ---- a version's outcomes
    READY = "Ready"
    """Verified and stored; promotable."""
    ARTIFACTS_COLLECTED = "ArtifactsCollected"
    """Retention removed its artifacts; the record stays for audit; no longer bootable."""

    # ---- terminal faults of the version itself (failed, Stalled)
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    NOT_AN_ARCHIVE = "NotAnArchive"
    CORRUPT_BUNDLE = "CorruptBundle"
    EMPTY_BUNDLE = "EmptyBundle"
    MISSING_ENTRYPOINT = "MissingEntrypoint"
    UNSAFE_MEMBER_TYPE = "UnsafeMemberType"
    UNSAFE_PATH = "UnsafePath"
    DUPLICATE_MEMBER = "DuplicateMember"
    TOO_MANY_MEMBERS = "TooManyMembers"
    FILE_TOO_LARGE = "FileTooLarge"
    BUNDLE_TOO_LARGE = "BundleTooLarge"
    COMPRESSION_RATIO_EXCEEDED = "CompressionRatioExceeded"
    ZSTD_WINDOW_TOO_LARGE = "ZstdWindowTooLarge"
    """A zstd frame declares a window above MIOSA_MAX_ZSTD_WINDOW (the decoder would allocate it)."""
    RESOURCE_LIMIT_EXCEEDED = "ResourceLimitExceeded"
    """Ingestion hit its memory or CPU budget (MIOSA_INGEST_MEMORY, MIOSA_INGEST_CPU_SECONDS)."""
    INGESTION_ABORTED = "IngestionAborted"
    """Ingestion or the health gate was interrupted by abnormal operator (or ingestion worker)
    deaths MIOSA_MAX_INTERRUPTED_ATTEMPTS times; graceful restarts do not count."""
    SOURCE_NOT_ALLOWED = "SourceNotAllowed"
    """``spec.artifact.uri`` or ``spec.buildLog.uri`` is outside the tenant's allowed source
    prefixes (by default ``<uploads>/<namespace>/``); decided before anything is read."""
    ARTIFACT_NOT_FOUND = "ArtifactNotFound"
    """The bundle was still missing after the grace period."""
    ARTIFACT_UNREADABLE = "ArtifactUnreadable"
    KIND_MISMATCH = "KindMismatch"
    INVALID_RUNTIME = "InvalidRuntime"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    """The verification pod ran but did not become ready on its health path in time."""
    IMAGE_PULL_FAILED = "ImagePullFailed"
    """The runtime image could not be pulled (for the whole health-gate deadline, or an invalid name)."""
    CRASH_LOOP = "CrashLoopBackOff"
    """The runtime's container keeps exiting."""

    # ---- faults of the operator's surroundings (retried; the version stays building)
    STORE_UNAVAILABLE = "StoreUnavailable"
    """Store timeouts, connection errors, 5xx: retried with backoff (Reconciling)."""
    STORE_ACCESS_DENIED = "StoreAccessDenied"
    """The store refused the operator's credentials: retried, and a person must fix it (Stalled)."""
    API_UNAVAILABLE = "ApiUnavailable"
    """The Kubernetes API failed a request: retried with backoff (Reconciling)."""
    PODS_UNSCHEDULABLE = "PodsUnschedulable"
    """A verification or live pod cannot be scheduled (capacity, taints): retried (Stalled)."""
    QUOTA_EXCEEDED = "QuotaExceeded"
    """A ResourceQuota refused a pod: retried (Stalled)."""
    POD_CREATION_REFUSED = "PodCreationRefused"
    """Admission refused a pod for another reason (Pod Security, a LimitRange, a webhook): retried (Stalled)."""
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"
    """The kubelet cannot start the container as configured (a missing Secret or ConfigMap key, an image
    that runs as root under runAsNonRoot): retried (Stalled)."""

    # ---- Deployments
    NOTHING_PROMOTED = "NothingPromoted"
    WAITING_FOR_VERSION = "WaitingForVersion"
    """The promoted version does not exist yet or is not ready yet; rolls out once it is."""
    ROLLING_OUT = "RollingOut"
    SCALING = "Scaling"
    """The live workload is not fully available (e.g. after a scale-up)."""
    LIVE = "Live"
    ROLLOUT_COMPLETE = "RolloutComplete"
    VERSION_FAILED = "VersionFailed"
    """The promoted version ended ``failed``; the live version keeps serving."""
    INVALID_PROMOTION = "InvalidPromotion"
    """The promoted version can never go live (another Deployment's or kind, collected)."""
    ROLLOUT_REVERTED = "RolloutReverted"
    """The rollout missed its deadline and the previous version was put back."""
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    """The rollout missed its deadline and there was nothing (or no permission) to revert to."""
    NAME_CONFLICT = "NameConflict"
    """An object the operator would create exists and is not the operator's own (version or Deployment;
    retried until it is renamed or deleted: Stalled)."""
    SECURITY_RELAXED = "SecurityRelaxed"
    """spec.podSecurity relaxes Pod Security restricted for this Deployment's pods."""
    RESTRICTED = "Restricted"
    """The pods run under Pod Security restricted."""

    # ---- RetentionPolicies
    POLICY_ACCEPTED = "PolicyAccepted"
    """The policy is in effect; the next sweep applies it."""
    SWEPT = "Swept"
    """The last sweep applied the policy."""
    COLLECTION_FAILED = "CollectionFailed"
    """Some collections of the last sweep failed (e.g. the store); retried at the next sweep."""


class EventReason(StrEnum):
    """Reasons of events that announce an action rather than a state (the rest use ``Reason``)."""

    HEALTH_GATE_STARTED = "HealthGateStarted"
    ROLLOUT_STARTED = "RolloutStarted"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ROLLOUT_FAILED = "RolloutFailed"
    ARCHIVED = "Archived"
