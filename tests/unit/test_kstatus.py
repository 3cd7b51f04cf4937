"""kstatus's documented rules, and its verdict on our objects in every state.

The same tables run against the real library in tests/e2e/test_health_tools.py."""

from __future__ import annotations

import pytest

from .health_cases import CASES, Case
from .kstatus import RULES, kstatus


@pytest.mark.parametrize(("obj", "expected"), [(obj, expected) for _, obj, expected in RULES], ids=[r[0] for r in RULES])
def test_documented_rule(obj: dict, expected: str) -> None:
    assert kstatus(obj) == expected


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kstatus_reads_our_objects(case: Case) -> None:
    assert kstatus(case.obj) == case.kstatus, case.note


def test_kstatus_misreads_only_where_the_health_checks_say_why() -> None:
    """Every case where kstatus alone disagrees with the shipped health checks is explained."""
    verdicts = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}
    for case in CASES:
        if verdicts[case.argocd] != case.kstatus and case.kstatus != "Terminating":
            assert case.note, f"{case.name}: kstatus says {case.kstatus}, Argo CD {case.argocd}; say why"
