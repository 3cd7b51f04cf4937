"""The DeploymentVersion state machine (PRODUCT.md, "States").

Forward only: created → building → ready | failed; ready → archived; and the one edge back,
archived → ready, taken only when a rollback makes the version live again.  The same edges
are a CEL rule in the CRD (``api.models.STATE_RULE``) so the API server refuses any other
transition even from a hand-written status patch; this module is what the operator consults
before it asks.
"""

from __future__ import annotations

from ..api.models import VersionState as S

EDGES: frozenset[tuple[S, S]] = frozenset(
    {
        (S.CREATED, S.BUILDING),
        (S.BUILDING, S.READY),
        (S.BUILDING, S.FAILED),
        (S.READY, S.ARCHIVED),
        (S.ARCHIVED, S.READY),
    }
)
INITIAL = S.CREATED
TERMINAL = frozenset({S.FAILED})
PROMOTABLE = frozenset({S.READY, S.ARCHIVED})


class InvalidTransition(ValueError):
    def __init__(self, old: S | None, new: S) -> None:
        super().__init__(f"status.state cannot move from {old or '(unset)'} to {new}")
        self.old, self.new = old, new


def can_transition(old: S | None, new: S) -> bool:
    """True when ``old → new`` is allowed; staying put is always allowed."""
    if old is None:
        return new == INITIAL
    return old == new or (old, new) in EDGES


def transition(old: S | None, new: S) -> S:
    if not can_transition(old, new):
        raise InvalidTransition(old, new)
    return new
