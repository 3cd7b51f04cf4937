"""Conditions by the Kubernetes API conventions and kstatus: one entry per type, Ready first.

``lastTransitionTime`` only moves when ``status`` changes, so watchers and
``kubectl wait --for=condition=Ready`` see real transitions, not every rewrite.

``Health`` is how controllers say where an object stands; ``health_conditions`` turns it
into ``Ready``, ``Reconciling`` and ``Stalled`` together (the last two only while True), by
the table in ``api.conditions``, so no controller can set one and forget the others.
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
    """``conditions`` with Ready set from ``health``, and Reconciling and Stalled present only
    while True; others kept.  kstatus reads an absent Reconciling or Stalled as False (they are
    "abnormal-true"), and Flux's own objects carry them the same way.  Left out when False they
    cost nothing: every status write of a version carried the pair, a third of its size and of
    the API server's work on it (docs/benchmarks.md)."""
    conditions = set_condition(
        conditions,
        type=ConditionType.READY,
        status=health.ready,
        reason=health.reason,
        message=health.message,
        generation=generation,
        now=now,
    )
    for type_, active in (
        (ConditionType.RECONCILING, health.progress == Progress.RECONCILING),
        (ConditionType.STALLED, health.progress == Progress.STALLED),
    ):
        if not active:
            conditions = [c for c in conditions if c.type != type_]
            continue
        conditions = set_condition(
            conditions, type=type_, status=True, reason=health.reason, message=health.message, generation=generation, now=now
        )
    return conditions


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
