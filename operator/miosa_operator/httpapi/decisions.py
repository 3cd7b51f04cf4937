"""What a promote or rollback request gets, decided here, before anything is written.

The admission webhook stays the cluster's judge, but its rules move ("promotion is intent":
a version that is still ``created``/``building`` is admitted and goes live once ready), so
the API does not depend on them: it answers from the objects it read, in this order.

1. **422 not_promotable**: what can never go live: a version of another kind, a ``failed``
   one, or one whose artifacts retention collected.
2. **409 auto_promotion**: promote under ``promotionPolicy: Auto`` (the operator keeps the
   newest ready version live, so a promotion would be undone at once).  Rollback is allowed
   and switches the policy to Manual in the same patch, as ``kubectl miosa rollback`` does.
3. **409 promotion_in_progress**: a rollout of another version is under way.  (A change
   racing ours between read and write is caught by the API server: the patch carries the
   ``resourceVersion`` we read, and its 409 becomes ``conflict``.)
4. **202 accepted**: the version is not ready yet; the promotion is recorded as intent and
   the operator rolls it out once the version is ready.
5. **200**: a ready or archived version; the rollout starts now.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.models import PromotionPolicy
from ..api.types import Obj
from .errors import ApiError, Code

BUILDING_STATES = frozenset({None, "created", "building"})
PROMOTABLE_STATES = frozenset({"ready", "archived"})


@dataclass(frozen=True)
class Verdict:
    status: int  # 200 or 202
    switch_to_manual: bool = False


def _spec(body: Obj) -> Obj:
    return body.get("spec") or {}


def _status(body: Obj) -> Obj:
    return body.get("status") or {}


def never_promotable(deployment: Obj, version: Obj) -> str | None:
    """Why ``version`` can never go live on ``deployment``; None if it can (now or later)."""
    name = (version.get("metadata") or {}).get("name", "")
    kind, version_kind = _spec(deployment).get("kind"), _spec(version).get("kind")
    if kind and version_kind and kind != version_kind:
        return f"version {name} is {version_kind}; the deployment is {kind}"
    state = _status(version).get("state")
    if state == "failed":
        return f"version {name} failed and is never promotable"
    if _status(version).get("artifactsCollectedAt"):
        return f"version {name}: its artifacts were collected by retention; it is no longer bootable"
    if state not in PROMOTABLE_STATES and state not in BUILDING_STATES:
        return f"version {name} is {state}"
    return None


def promotion_verdict(deployment: Obj, version: Obj, *, rollback: bool) -> Verdict:
    """The answer to promoting (or rolling back to) ``version``; raises ``ApiError`` for a refusal."""
    problem = never_promotable(deployment, version)
    if problem:
        raise ApiError(422, Code.NOT_PROMOTABLE, problem)
    auto = _spec(deployment).get("promotionPolicy") == PromotionPolicy.AUTO.value
    if auto and not rollback:
        raise ApiError(
            409,
            Code.AUTO_PROMOTION,
            "the deployment's promotionPolicy is Auto: the newest ready version goes live by itself; "
            "roll back to this version instead (POST …/rollback with version_id), which switches the policy to Manual",
        )
    name = (version.get("metadata") or {}).get("name")
    rollout = _status(deployment).get("rollout") or {}
    if rollout.get("version") and rollout.get("version") != name:
        raise ApiError(
            409,
            Code.PROMOTION_IN_PROGRESS,
            f"a rollout of {rollout['version']} is in progress; wait for it to finish (or fail) and try again",
        )
    state = _status(version).get("state")
    return Verdict(202 if state in BUILDING_STATES else 200, switch_to_manual=auto)


def previous_live_candidates(deployment: Obj) -> list[str]:
    """Rollback targets by default, best first: the versions that were live before, newest first."""
    status = _status(deployment)
    live = status.get("liveVersion")
    seen: list[str] = []
    for entry in reversed(status.get("history") or []):
        name = entry.get("version")
        if name and name != live and name not in seen:
            seen.append(name)
    return seen


def bootable(version: Obj) -> bool:
    """Ready or archived and not collected: a rollback target that can go live now."""
    status = _status(version)
    return status.get("state") in PROMOTABLE_STATES and not status.get("artifactsCollectedAt")
