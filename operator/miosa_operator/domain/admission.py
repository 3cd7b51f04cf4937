"""What the admission webhook answers: the decision, apart from HTTP, TLS and kopf.

**Promotion is intent.**  A GitOps tool applies a new DeploymentVersion and the Deployment's
new ``spec.promotedVersion`` in one sync, in an order it chooses, after a server-side dry
run of the whole set.  So the webhook refuses only what can never succeed — a version of
another Deployment or of the other kind, a ``failed`` one, one whose artifacts retention
collected (``Refusal.final``) — and admits a version that does not exist yet or is still
``created``/``building`` with an admission *warning* (kubectl and Flux print it); the
Deployment then waits with ``Ready=False, reason=WaitingForVersion`` and rolls out once the
version is ``ready`` (``controllers.deployments``).  Both sides share
``domain.promotion.check_promotable``, so they cannot disagree on what is final.

Only a write that changes ``spec.promotedVersion`` (or creates a Deployment with one) is
checked; the webhook configuration's ``matchConditions`` send nothing else, so label
changes, scaling and GitOps re-applies pass while the operator is down.

**One namespace.**  A review is answered from the namespace of the object under review and
nothing else: a review whose request namespace disagrees with its object's is refused
before any lookup (``namespace_mismatch``), so even a client that gets through TLS learns
nothing about another tenant's versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.models import VersionKind
from .promotion import VersionView, check_promotable

WAITING_NOTE = "admitted as intent: the Deployment waits (WaitingForVersion) and rolls out once the version is ready"


@dataclass(frozen=True)
class Verdict:
    """An admission answer: allowed or not, why not, and warnings for the client."""

    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


ALLOWED = Verdict(True)


def requested_promotion(body: Mapping[str, Any], old: Mapping[str, Any] | None) -> str | None:
    """The version a write asks to promote, or None when it does not change ``promotedVersion``."""
    requested = (body.get("spec") or {}).get("promotedVersion") or None
    previous = ((old or {}).get("spec") or {}).get("promotedVersion") or None
    return requested if requested != previous else None


def review_promotion(deployment: str, kind: VersionKind, requested: str, version: VersionView | None) -> Verdict:
    """Refuse a promotion that can never succeed; admit one that may, with a warning if it waits."""
    refusal = check_promotable(deployment, kind, requested, version)
    if refusal is None:
        return ALLOWED
    if refusal.final:
        return Verdict(False, refusal.message)
    return Verdict(True, warnings=(f"{refusal.message}; {WAITING_NOTE}",))


def namespace_mismatch(request_namespace: str | None, *bodies: Mapping[str, Any] | None) -> str | None:
    """Why a review cannot be answered from one namespace, or None if it can."""
    if not request_namespace:
        return "the admission request names no namespace"
    for body in bodies:
        if body is None:
            continue
        namespace = (body.get("metadata") or {}).get("namespace")
        if namespace and namespace != request_namespace:
            return "the object under review is not in the namespace of the admission request"
    return None
