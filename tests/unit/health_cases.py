"""Our objects in every state, and what each GitOps health reader must make of them.

One table, three readers:

* ``argocd`` — the ``health.lua`` scripts in ``integrations/argocd`` (run by a real Lua 5.1,
  the dialect of Argo CD's gopher-lua: tests/unit/test_health_checks.py);
* ``flux`` — the ``healthCheckExprs`` in ``integrations/flux`` as kustomize-controller
  evaluates them, kstatus for a kind without expressions (its own code, built by
  hack/build-binaries.sh: tests/e2e/test_health_tools.py);
  ``WAITING`` is an expression that cannot be evaluated yet (no ``status`` at all), which
  Flux treats as "not ready, poll again";
* ``kstatus`` — ``sigs.k8s.io/cli-utils`` kstatus, the reader of Flux without our
  expressions and of ``kubectl``-side tools (the real library in the e2e test, the Python
  transcription in tests/unit/kstatus.py here).

The conditions are written by the operator's own code (``domain.conditions.Health``), so the
fixtures are exactly what the controllers write.  Where kstatus alone misreads an object
(``kstatus`` differs from ``flux``/``argocd``), the case says why; docs/gitops.md explains
why the shipped health checks are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from miosa_operator.api.conditions import Reason
from miosa_operator.domain.conditions import Health, health_conditions

WAITING = "waiting"
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
GROUP_VERSION = "deploy.miosa.io/v1alpha1"


@dataclass(frozen=True)
class Case:
    name: str
    obj: dict[str, Any]
    argocd: str
    flux: str
    kstatus: str
    message: str = ""
    """A part of the Argo CD message (it must say why)."""
    note: str = field(default="", compare=False)


def _conditions(health: Health, generation: int) -> list[dict[str, Any]]:
    return [c.wire() for c in health_conditions(None, health, generation=generation, now=NOW)]


def version(
    name: str, state: str | None, health: Health | None, *, generation: int = 1, deleting: bool = False, **status: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "DeploymentVersion",
        "metadata": {"name": name, "namespace": "acme", "generation": generation, "uid": f"uid-{name}"},
        "spec": {
            "deploymentRef": {"name": "site"},
            "kind": "static",
            "artifact": {"uri": f"s3://miosa-uploads/acme/{name}.tar.gz", "sha256": "a" * 64},
        },
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-05-04T12:00:00Z"
    if state is not None:
        obj["status"] = {"state": state, "observedGeneration": generation, **status}
        if health is not None:
            obj["status"]["conditions"] = _conditions(health, generation)
    return obj


def deployment(
    name: str, health: Health | None, *, generation: int = 1, observed: int | None = None, **status: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "acme", "generation": generation, "uid": f"uid-{name}"},
        "spec": {"kind": "static", "promotedVersion": "site-v2"},
    }
    if health is not None:
        observed = generation if observed is None else observed
        obj["status"] = {"observedGeneration": observed, "conditions": _conditions(health, observed), **status}
    return obj


def retention_policy(name: str, status: dict[str, Any] | None = None, health: Health | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": "RetentionPolicy",
        "metadata": {"name": name, "namespace": "acme", "generation": 1, "uid": f"uid-{name}"},
        "spec": {"retainDays": 30, "rollbackWindow": 5},
    }
    if status is not None or health is not None:
        obj["status"] = dict(status or {})
    if health is not None:
        obj["status"].update(observedGeneration=1, conditions=_conditions(health, 1))
    return obj


_LIVE = "version site-v2 (#2) is live"
VERSION_CASES = [
    Case(
        "version-new",
        version("site-v1", None, None),
        "Progressing",
        WAITING,
        "Current",
        message="Waiting for the operator",
        note="kstatus reads an object without conditions as Current: only the health checks wait for the operator",
    ),
    Case(
        "version-pending",
        version("site-v1", "created", Health.reconciling(Reason.PENDING, "waiting to be numbered")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="Pending: waiting to be numbered",
    ),
    Case(
        "version-deployment-not-found",
        version("site-v1", "created", Health.reconciling(Reason.DEPLOYMENT_NOT_FOUND, "Deployment 'site' does not exist")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="DeploymentNotFound",
    ),
    Case(
        "version-building",
        version("site-v1", "building", Health.reconciling(Reason.BUILDING, "verifying the bundle")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="Building",
    ),
    Case(
        "version-artifact-pending",
        version(
            "site-v1", "created", Health.reconciling(Reason.ARTIFACT_PENDING, "s3://uploads/acme/site-v1.tar.gz not found yet")
        ),
        "Progressing",
        "InProgress",
        "InProgress",
        message="ArtifactPending",
        note="The bundle is not uploaded yet (a CI upload may trail the commit): waiting is progress.",
    ),
    Case(
        "version-store-unavailable",
        version("site-v1", "building", Health.reconciling(Reason.STORE_UNAVAILABLE, "store timed out; retrying")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="StoreUnavailable",
    ),
    Case(
        "version-store-access-denied",
        version("site-v1", "building", Health.stalled(Reason.STORE_ACCESS_DENIED, "the store refused the credentials")),
        "Degraded",
        "Failed",
        "Failed",
        message="StoreAccessDenied: the store refused",
    ),
    Case(
        "version-ready",
        version("site-v1", "ready", Health(True, Reason.READY, "artifact verified and stored; promotable"), versionNumber=1),
        "Healthy",
        "Current",
        "Current",
        message="Ready",
    ),
    Case(
        "version-live",
        version(
            "site-v2",
            "ready",
            Health(True, Reason.READY, "artifact verified and stored; promotable"),
            versionNumber=2,
            promotedAt="2026-05-04T11:00:00Z",
        ),
        "Healthy",
        "Current",
        "Current",
    ),
    Case(
        "version-archived",
        version("site-v1", "archived", Health(True, Reason.READY, "promoted out of; bootable for rollback"), versionNumber=1),
        "Healthy",
        "Current",
        "Current",
    ),
    Case(
        "version-failed",
        version("site-v3", "failed", Health.stalled(Reason.CHECKSUM_MISMATCH, "sha256 of the bundle is 0f…, spec says aa…")),
        "Degraded",
        "Failed",
        "Failed",
        message="ChecksumMismatch: sha256",
    ),
    Case(
        "version-collected",
        version(
            "site-v1",
            "archived",
            Health(False, Reason.ARTIFACTS_COLLECTED, "artifacts collected by retention; the record stays for audit"),
            versionNumber=1,
            artifactsCollectedAt="2026-05-04T10:00:00Z",
        ),
        "Healthy",
        "Current",
        "InProgress",
        message="record is kept for audit",
        note="kstatus reads Ready=False without Stalled as InProgress for ever: a repository that still holds "
        "the manifest of a collected version never turns Ready without the shipped health checks",
    ),
    Case(
        "version-deleting",
        version("site-v1", "ready", Health(True, Reason.READY, "promotable"), deleting=True),
        "Progressing",
        "Current",
        "Terminating",
        message="Being deleted",
    ),
]

DEPLOYMENT_CASES = [
    Case(
        "deployment-new",
        deployment("site", None),
        "Progressing",
        WAITING,
        "Current",
        message="Waiting for the operator",
        note="as for versions: without conditions kstatus says Current before the operator has looked",
    ),
    Case(
        "deployment-nothing-promoted",
        deployment("site", Health(True, Reason.NOTHING_PROMOTED, "no version is promoted; nothing runs")),
        "Healthy",
        "Current",
        "Current",
        message="NothingPromoted",
    ),
    Case(
        "deployment-waiting-for-version",
        deployment("site", Health.reconciling(Reason.WAITING_FOR_VERSION, "site-v2 is building; site-v1 stays live")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="WaitingForVersion: site-v2 is building",
    ),
    Case(
        "deployment-rolling-out",
        deployment("site", Health.reconciling(Reason.ROLLING_OUT, "promote: rolling out site-v2 (#2)")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="RollingOut",
    ),
    Case(
        "deployment-live",
        deployment("site", Health(True, Reason.LIVE, _LIVE), liveVersion="site-v2"),
        "Healthy",
        "Current",
        "Current",
        message="Live: version site-v2 (#2) is live",
    ),
    Case(
        "deployment-spec-not-observed",
        deployment("site", Health(True, Reason.LIVE, _LIVE), generation=3, observed=2, liveVersion="site-v2"),
        "Progressing",
        "InProgress",
        "InProgress",
        message="observe generation 3",
        note="a commit that changes promotedVersion is not Ready on the old version's conditions",
    ),
    Case(
        "deployment-scaling",
        deployment("site", Health.reconciling(Reason.SCALING, "waiting for 3 available replicas")),
        "Progressing",
        "InProgress",
        "InProgress",
        message="Scaling",
    ),
    Case(
        "deployment-version-failed",
        deployment("site", Health.stalled(Reason.VERSION_FAILED, "site-v3 failed (ChecksumMismatch); site-v2 stays live")),
        "Degraded",
        "Failed",
        "Failed",
        message="VersionFailed: site-v3 failed",
    ),
    Case(
        "deployment-invalid-promotion",
        deployment("site", Health.stalled(Reason.INVALID_PROMOTION, "other-v1 belongs to Deployment other")),
        "Degraded",
        "Failed",
        "Failed",
        message="InvalidPromotion",
    ),
    Case(
        "deployment-rollout-reverted",
        deployment(
            "site",
            Health.stalled(Reason.ROLLOUT_REVERTED, "the rollout of site-v3 failed and was reverted; site-v2 stays live"),
            liveVersion="site-v2",
        ),
        "Degraded",
        "Failed",
        "Failed",
        message="RolloutReverted",
        note="the previous version serves, but the commit's promotedVersion is not live",
    ),
    Case(
        "deployment-name-conflict",
        deployment("site", Health.stalled(Reason.NAME_CONFLICT, "apps/v1 Deployment site exists and is not ours")),
        "Degraded",
        "Failed",
        "Failed",
        message="NameConflict",
    ),
]

RETENTION_POLICY_CASES = [
    Case(
        "retention-policy-new",
        retention_policy("default"),
        "Healthy",
        "Current",
        "Current",
        message="next sweep",
        note="configuration: nothing to wait for",
    ),
    Case(
        "retention-policy-swept",
        retention_policy("default", {"lastSweepAt": "2026-05-04T11:00:00Z", "collected": 3}),
        "Healthy",
        "Current",
        "Current",
        message="2026-05-04T11:00:00Z",
    ),
    Case(
        "retention-policy-ready",
        retention_policy("default", {"lastSweepAt": "2026-05-04T11:00:00Z"}, Health(True, Reason.READY, "applied")),
        "Healthy",
        "Current",
        "Current",
    ),
    Case(
        "retention-policy-stalled",
        retention_policy("default", {}, Health.stalled(Reason.STORE_ACCESS_DENIED, "the store refused the credentials")),
        "Degraded",
        "Failed",
        "Failed",
        message="StoreAccessDenied",
    ),
]

CASES = VERSION_CASES + DEPLOYMENT_CASES + RETENTION_POLICY_CASES
