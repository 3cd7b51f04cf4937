"""Conditions by the Kubernetes API conventions and kstatus: one entry per type, Ready first.

``lastTransitionTime`` only moves when ``status`` changes, so watchers and
``kubectl wait --for=condition=Ready`` see real transitions, not every rewrite.

``Health`` is how controllers say where an object stands; ``health_conditions`` turns it
into ``Ready``, ``Reconciling`` and ``Stalled`` together, by the table in
``api.conditions``, so no controller can set one and forget the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from ..api.conditions import ConditionType, Reason
from ..api.models import Condition, ConditionStatus

READY = ConditionType.READY


class Progress(Enum):
    """Whether the operator is still working towards ``Ready``."""

    DONE = "done"
    """Nothing more to do: ``Ready`` says it all."""
    RECONCILING = "reconciling"
    """Working on it, or retrying a fault of its surroundings with backoff."""
    STALLED = "stalled"
    """Cannot get there without a person (a terminal fault, or one an administrator must fix)."""


@dataclass(frozen=True)
class Health:
    """Where an object stands: the facts behind its three kstatus conditions."""

    ready: bool
    reason: Reason
    message: str
    progress: Progress = Progress.DONE

    @classmethod
    def reconciling(cls, reason: Reason, message: str) -> Health:
        return cls(False, reason, message, Progress.RECONCILING)

    @classmethod
    def stalled(cls, reason: Reason, message: str, *, ready: bool = False) -> Health:
        return cls(ready, reason, message, Progress.STALLED)


def health_conditions(
    conditions: list[Condition] | None, health: Health, *, generation: int | None, now: datetime
) -> list[Condition]:
    """``conditions`` with Ready, Reconciling and Stalled set from ``health``; others kept."""
    for type_, status in (
        (ConditionType.READY, health.ready),
        (ConditionType.RECONCILING, health.progress == Progress.RECONCILING),
        (ConditionType.STALLED, health.progress == Progress.STALLED),
    ):
        conditions = set_condition(
            conditions,
            type=type_,
            status=status,
            reason=health.reason,
            message=health.message,
            generation=generation,
            now=now,
        )
    return conditions or []


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
        type=str(type),
        status=status,
        reason=str(reason),
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    ordered = sorted(current.values(), key=lambda c: (c.type != READY, c.type))
    return ordered


def get_condition(conditions: list[Condition] | None, type: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type), None)
