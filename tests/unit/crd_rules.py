"""The generated CRDs' CEL rules, evaluated here so the tests need no API server for them.

``TRANSITIONS`` is the table of ``status.state`` moves of a DeploymentVersion, computed by
evaluating the rule in crds/deploy.miosa.io_deploymentversions.yaml (what ``make crds``
generated from ``api.models.STATE_RULE``) with a real CEL interpreter (cel-python) for every
pair of (old state or none, new state).  The fake API server (tests/unit/fakes.py) enforces
this table; tests/unit/test_fakes.py checks the fake and ``domain.states`` against it, and
tests/e2e/test_crd_rules.py feeds the same rule to the real API server and checks its
verdicts against the same table, so the fake, the operator and the API server cannot drift.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy import celtypes

CRDS = Path(__file__).resolve().parents[2] / "crds"
VERSIONS_CRD = CRDS / "deploy.miosa.io_deploymentversions.yaml"


def state_schema() -> dict[str, Any]:
    """``status.state`` of the generated DeploymentVersion CRD: enum and CEL rule."""
    crd = yaml.safe_load(VERSIONS_CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["state"])


def _optional(value: str | None) -> celtypes.MapType:
    """``oldSelf`` of a rule with ``optionalOldSelf``: an optional, as a one-entry map."""
    return celtypes.MapType({} if value is None else {celtypes.StringType("value"): celtypes.StringType(value)})


def _allowed_by_cel(rule: str) -> dict[tuple[str | None, str], bool]:
    env = celpy.Environment()
    program = env.program(
        env.compile(rule),
        functions={  # Kubernetes' optional type: the two methods the rule calls
            "hasValue": lambda optional: celtypes.BoolType(len(optional) > 0),
            "value": lambda optional: optional[celtypes.StringType("value")],
        },
    )
    states: list[str] = state_schema()["enum"]
    return {
        (old, new): bool(program.evaluate({"self": celtypes.StringType(new), "oldSelf": _optional(old)}))
        for old in [None, *states]
        for new in states
    }


def _state_rule() -> str:
    (validation,) = state_schema()["x-kubernetes-validations"]
    assert validation.get("optionalOldSelf") is True, validation
    rule: str = validation["rule"]
    return rule


STATES: list[str] = state_schema()["enum"]
TRANSITIONS: dict[tuple[str | None, str], bool] = _allowed_by_cel(_state_rule())
"""(old ``status.state`` or None when unset, new state) → whether the CRD admits the write."""


def path_to(state: str | None) -> list[str]:
    """The shortest series of admitted writes from an unset state to ``state``."""
    paths: dict[str | None, list[str]] = {None: []}
    frontier: list[str | None] = [None]
    while frontier:
        old = frontier.pop(0)
        for new in STATES:
            if TRANSITIONS[(old, new)] and new not in paths:
                paths[new] = [*paths[old], new]
                frontier.append(new)
    return paths[state]
