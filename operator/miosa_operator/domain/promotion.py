"""Which version should be live, may it be promoted, and what a completed rollout changes.

Pure functions over small views of versions, shared by the admission webhook (refuse a bad
``promotedVersion`` before it is stored) and the Deployment controller (choose the target,
classify the action for history).

``promotionPolicy`` semantics:

* ``Manual`` (default): ``spec.promotedVersion`` is the target.  Empty means nothing runs.
* ``Auto``: the target is the ready, not collected version with the highest version number
  of this Deployment *incarnation* (its ``status.id``: versions of a deleted Deployment of the
  same name are never chosen automatically), except one whose rollout already failed and was
  reverted (it would loop); ``spec.promotedVersion`` is ignored for choosing (the webhook
  still validates it).

A version claimed by retention (``status.collectionClaimedAt``, written before its artifacts
are deleted) is refused like a collected one, by the webhook and by the Deployment controller
alike (``check_promotable``), so collection and promotion cannot race.
  To pin or roll back under Auto, switch the policy to ``Manual``: ``kubectl miosa rollback``
  does both in one patch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..api.conditions import Reason
from ..api.models import DeploymentVersion, HistoryAction, PromotionPolicy, VersionKind, VersionState
from .states import PROMOTABLE


@dataclass(frozen=True)
class VersionView:
    """The facts about a DeploymentVersion that promotion decisions need."""

    name: str
    deployment: str
    kind: VersionKind
    state: VersionState | None
    number: int | None
    collected: bool = False
    id: str | None = None
    claimed: bool = False
    """Claimed by retention for collection: its artifacts are (being) deleted."""
    deployment_id: str | None = None
    """``status.deploymentId``: the Deployment incarnation that numbered it."""

    @classmethod
    def from_model(cls, version: DeploymentVersion) -> VersionView:
        status = version.status
        return cls(
            name=version.metadata.name,
            deployment=version.spec.deployment_ref.name,
            kind=version.spec.kind,
            state=status.state,
            number=status.version_number,
            collected=status.artifacts_collected_at is not None,
            id=status.id,
            claimed=status.collection_claimed_at is not None,
            deployment_id=status.deployment_id,
        )

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> VersionView:
        spec, status = body.get("spec") or {}, body.get("status") or {}
        state = status.get("state")
        return cls(
            name=body["metadata"]["name"],
            deployment=(spec.get("deploymentRef") or {}).get("name", ""),
            kind=VersionKind(spec.get("kind", "static")),
            state=VersionState(state) if state else None,
            number=status.get("versionNumber"),
            collected=bool(status.get("artifactsCollectedAt")),
            id=status.get("id"),
            claimed=bool(status.get("collectionClaimedAt")),
            deployment_id=status.get("deploymentId"),
        )


@dataclass(frozen=True)
class Refusal:
    """Why a version is not (or not yet) going live: a condition reason and its message."""

    reason: Reason
    """``WaitingForVersion`` (it may still become promotable), ``VersionFailed`` or
    ``InvalidPromotion`` (it never will)."""
    message: str

    @property
    def final(self) -> bool:
        return self.reason != Reason.WAITING_FOR_VERSION


def check_promotable(deployment: str, kind: VersionKind, requested: str, version: VersionView | None) -> Refusal | None:
    """Why ``requested`` cannot become the live version of ``deployment`` now; None if it can."""
    prefix = f"promotedVersion {requested!r}"
    if version is None:
        return Refusal(Reason.WAITING_FOR_VERSION, f"{prefix}: no DeploymentVersion of that name exists in this namespace")
    if version.deployment != deployment:
        return Refusal(Reason.INVALID_PROMOTION, f"{prefix} belongs to Deployment {version.deployment!r}, not {deployment!r}")
    if version.kind != kind:
        return Refusal(
            Reason.INVALID_PROMOTION, f"{prefix} is a {version.kind.value} version; Deployment {deployment!r} is {kind.value}"
        )
    if version.collected:
        return Refusal(
            Reason.INVALID_PROMOTION,
            f"{prefix}: its artifacts were garbage-collected by retention; it is no longer bootable",
        )
    if version.claimed:
        return Refusal(
            Reason.INVALID_PROMOTION,
            f"{prefix}: retention is collecting its artifacts; it is no longer bootable",
        )
    if version.state not in PROMOTABLE:
        state = version.state.value if version.state else "not yet numbered"
        reason = Reason.VERSION_FAILED if version.state == VersionState.FAILED else Reason.WAITING_FOR_VERSION
        return Refusal(reason, f"{prefix} is {state}; only ready or archived versions can be promoted")
    return None


def newest_ready(
    deployment: str, versions: Iterable[VersionView], excluded: Iterable[str] = (), deployment_id: str | None = None
) -> VersionView | None:
    """The ready version with the highest number of ``deployment`` (of incarnation
    ``deployment_id`` when given), skipping ``excluded``."""
    skip = set(excluded)
    candidates = [
        v
        for v in versions
        if v.deployment == deployment
        and (deployment_id is None or v.deployment_id == deployment_id)
        and v.state == VersionState.READY
        and not v.collected
        and not v.claimed
        and v.number is not None
        and v.name not in skip
    ]
    return max(candidates, key=lambda v: v.number or 0, default=None)


def desired_version(
    policy: PromotionPolicy,
    promoted_version: str | None,
    deployment: str,
    versions: Iterable[VersionView],
    reverted: Iterable[str] = (),
    deployment_id: str | None = None,
) -> str | None:
    """Name of the version that should be live, or None for "nothing"."""
    if policy == PromotionPolicy.AUTO:
        newest = newest_ready(deployment, versions, excluded=reverted, deployment_id=deployment_id)
        return newest.name if newest else None
    return promoted_version or None


def classify(policy: PromotionPolicy, target_number: int | None, live_number: int | None) -> HistoryAction:
    """promote (forward), rollback (to an older number) or auto (chosen by the policy)."""
    if policy == PromotionPolicy.AUTO:
        return HistoryAction.AUTO
    if live_number is not None and target_number is not None and target_number < live_number:
        return HistoryAction.ROLLBACK
    return HistoryAction.PROMOTE
