"""Which versions' artifacts may be garbage-collected now (PRODUCT.md, "Retention").

A pure plan over one listing of versions, Deployments and policies, so that one sweep costs
three LIST calls plus one write per collected version, and tests can move the clock.

Never collected:
* the live version, the version being rolled out and the version ``spec.promotedVersion``
  names (it may be about to roll out);
* the rollback window: the last N distinct versions that were live, from the Deployment's
  history (N = ``rollbackWindow``);
* versions annotated ``deploy.miosa.io/retain: "true"``;
* versions younger than ``retainDays``, counted from when they became ready (never
  promoted) or archived (promoted out of);
* versions without a stored release (``failed`` ones, and ``dynamic`` ones, whose artifact
  is a container image that lives in the customer's registry, not in our store);
* versions a Deployment is rolling out (``status.promotion``, written on the version before
  the rollout starts), unless that mark is stale: its Deployment is gone, or it is older than
  ``STALE_MARK`` and the Deployment is not rolling the version out.

A version already claimed for collection (``status.collectionClaimedAt``) is collected even
if it would now be kept: the claim is final (promotion refuses a claimed version), and a
sweep that died after claiming must finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api import meta
from ..api.models import (
    Deployment,
    DeploymentVersion,
    RetentionPolicySpec,
    VersionState,
)

STALE_MARK = timedelta(minutes=15)
"""A promotion mark whose Deployment is not rolling the version out is ignored after this long
(a Deployment's rollout status is written a moment after the mark; never minutes after)."""


@dataclass(frozen=True)
class Policy:
    retain_days: int = 30
    rollback_window: int = 5
    keep_build_logs: bool = True

    @classmethod
    def from_spec(cls, spec: RetentionPolicySpec) -> Policy:
        return cls(spec.retain_days, spec.rollback_window, spec.keep_build_logs)


@dataclass(frozen=True)
class Decision:
    namespace: str
    name: str
    collect: bool
    why: str
    uris: tuple[str, ...] = ()


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)

    @property
    def collect(self) -> list[Decision]:
        return [d for d in self.decisions if d.collect]

    def kept_because(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.decisions:
            if not d.collect:
                counts[d.why] = counts.get(d.why, 0) + 1
        return counts


def protected_versions(deployment: Deployment, window: int) -> dict[str, str]:
    """Version name -> why it is protected, for one Deployment."""
    protected: dict[str, str] = {}
    recent: list[str] = []
    for entry in reversed(deployment.status.history or []):
        if entry.version not in recent:
            recent.append(entry.version)
    for name in recent[:window]:
        protected[name] = "rollback window"
    if deployment.spec.promoted_version:
        protected[deployment.spec.promoted_version] = "promoted"
    if deployment.status.rollout:
        protected[deployment.status.rollout.version] = "rolling out"
    if deployment.status.live_version:
        protected[deployment.status.live_version] = "live"
    return protected


def age_reference(version: DeploymentVersion) -> datetime | None:
    status = version.status
    if status.state == VersionState.ARCHIVED:
        return status.archived_at or status.ready_at
    candidates = [t for t in (status.ready_at, status.promoted_at) if t is not None]
    return max(candidates) if candidates else None


def being_promoted(version: DeploymentVersion, deployments: Mapping[str, Deployment], now: datetime) -> bool:
    """``status.promotion`` marks a rollout that may still be going on (``deployments`` by uid)."""
    mark = version.status.promotion
    if mark is None:
        return False
    deployment = deployments.get(mark.deployment_uid)
    if deployment is None:
        return False
    rollout = deployment.status.rollout
    if rollout is not None and rollout.version == version.metadata.name:
        return True
    return now - mark.since < STALE_MARK


def decide(
    version: DeploymentVersion,
    protected: dict[str, str],
    policy: Policy,
    now: datetime,
    deployments: Mapping[str, Deployment] | None = None,
) -> Decision:
    """Collect or keep ``version``; ``deployments`` (by uid) tell whether a promotion mark is live."""
    ns, name, status = version.metadata.namespace, version.metadata.name, version.status

    def keep(why: str) -> Decision:
        return Decision(ns, name, False, why)

    if status.artifacts_collected_at:
        return keep("already collected")
    if status.collection_claimed_at and status.artifact_uri:
        return Decision(ns, name, True, "claimed by an earlier sweep", _uris(version, policy))
    if status.state not in (VersionState.READY, VersionState.ARCHIVED) or not status.artifact_uri:
        return keep("no stored release")
    if name in protected:
        return keep(protected[name])
    if being_promoted(version, deployments or {}, now):
        return keep("being promoted")
    if version.metadata.annotations.get(meta.ANNOTATION_RETAIN, "").lower() == "true":
        return keep("retain annotation")
    since = age_reference(version)
    if since is None or now - since < timedelta(days=policy.retain_days):
        return keep("within retention period")
    days = (now - since).days
    return Decision(ns, name, True, f"{status.state.value if status.state else '?'} for {days} days", _uris(version, policy))


def _uris(version: DeploymentVersion, policy: Policy) -> tuple[str, ...]:
    status = version.status
    uris = [status.artifact_uri] if status.artifact_uri else []
    if not policy.keep_build_logs and status.build_log_uri:
        uris.append(status.build_log_uri)
    return tuple(uris)


def plan_sweep(
    versions: Iterable[DeploymentVersion],
    deployments: Iterable[Deployment],
    policies: dict[str, Policy],
    default: Policy,
    now: datetime,
) -> Plan:
    """Decide for every version; ``policies`` maps namespace -> its policy."""
    protected: dict[tuple[str, str], dict[str, str]] = {}
    by_uid: dict[str, Deployment] = {}
    for dep in deployments:
        window = policies.get(dep.metadata.namespace, default).rollback_window
        protected[(dep.metadata.namespace, dep.metadata.name)] = protected_versions(dep, window)
        by_uid[dep.metadata.uid] = dep
    plan = Plan()
    for version in versions:
        key = (version.metadata.namespace, version.spec.deployment_ref.name)
        policy = policies.get(version.metadata.namespace, default)
        plan.decisions.append(decide(version, protected.get(key, {}), policy, now, by_uid))
    return plan
