"""kstatus itself and Flux's own evaluator, on the documented rules and on our objects in
every state (tests/unit/health_cases.py): the Python transcription of kstatus the unit
tests use, and the health checks we ship, must agree with the real libraries.

No cluster: only the binaries hack/build-binaries.sh builds (kstatus from
sigs.k8s.io/cli-utils, flux-health from kustomize-controller's module)."""

from __future__ import annotations

from unit.health_cases import CASES, WAITING
from unit.kstatus import RULES
from unit.kstatus import kstatus as transcribed

from .health import flux_health, kstatus


def test_kstatus_documented_rules() -> None:
    computed = kstatus(*(obj for _, obj, _ in RULES))
    assert {name: got for (name, _, _), got in zip(RULES, computed, strict=True)} == {name: want for name, _, want in RULES}


def test_kstatus_reads_our_objects_as_the_table_says() -> None:
    computed = kstatus(*(case.obj for case in CASES))
    assert dict(zip((c.name for c in CASES), computed, strict=True)) == {c.name: c.kstatus for c in CASES}
    assert computed == [transcribed(case.obj) for case in CASES]


def test_flux_health_check_exprs_read_our_objects_as_the_table_says() -> None:
    computed = flux_health(*(case.obj for case in CASES))
    assert dict(zip((c.name for c in CASES), computed, strict=True)) == {c.name: c.flux for c in CASES}
    assert WAITING in computed  # an object without status is waited for, not Current
