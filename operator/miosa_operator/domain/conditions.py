"""Conditions by the Kubernetes API conventions: one entry per type, Ready first.

``lastTransitionTime`` only moves when ``status`` changes, so watchers and
``kubectl wait --for=condition=Ready`` see real transitions, not every rewrite.
"""

from __future__ import annotations

from datetime import datetime

from ..api.models import Condition, ConditionStatus

READY = "Ready"


def set_condition(
    conditions: list[Condition] | None,
    *,
    type: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return ``conditions`` with ``type`` set; the input list is not modified."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    current = {c.type: c for c in conditions or []}
    old = current.get(type)
    since = old.last_transition_time if old is not None and old.status == status else now
    current[type] = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    ordered = sorted(current.values(), key=lambda c: (c.type != READY, c.type))
    return ordered


def get_condition(conditions: list[Condition] | None, type: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type), None)
