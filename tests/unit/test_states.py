from __future__ import annotations

import itertools

import pytest

from miosa_operator.api.models import VersionState as S
from miosa_operator.domain.states import InvalidTransition, can_transition, transition

ALLOWED = {
    (S.CREATED, S.BUILDING),
    (S.BUILDING, S.READY),
    (S.BUILDING, S.FAILED),
    (S.READY, S.ARCHIVED),
    (S.ARCHIVED, S.READY),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(list(S), list(S))))
def test_only_documented_edges_are_allowed(old: S, new: S) -> None:
    assert can_transition(old, new) == (old == new or (old, new) in ALLOWED)


@pytest.mark.parametrize("new", list(S))
def test_first_state_must_be_created(new: S) -> None:
    assert can_transition(None, new) == (new == S.CREATED)


def test_failed_is_terminal_and_ready_never_fails() -> None:
    assert not any(can_transition(S.FAILED, s) for s in S if s != S.FAILED)
    with pytest.raises(InvalidTransition, match="cannot move from ready to failed"):
        transition(S.READY, S.FAILED)
