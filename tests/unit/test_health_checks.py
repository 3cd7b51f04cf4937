"""The Argo CD health checks (integrations/argocd) run by a real Lua on our objects in every
state (tests/unit/health_cases.py), and the generated argocd-cm patch kept in step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from .argocd import ARGOCD, argocd_health
from .health_cases import CASES, Case

REPO = Path(__file__).resolve().parents[2]
FLUX = REPO / "integrations" / "flux" / "healthcheckexprs.yaml"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_argocd_health(case: Case) -> None:
    health = argocd_health(case.obj)
    assert set(health) == {"status", "message"}
    assert health["status"] == case.argocd, health
    assert case.message in health["message"]


def test_every_kind_has_a_health_check_and_flux_expressions() -> None:
    kinds = {c.obj["kind"] for c in CASES}
    assert {p.parent.name for p in (ARGOCD / "deploy.miosa.io").glob("*/health.lua")} == kinds
    exprs = yaml.safe_load(FLUX.read_text())
    assert {e["kind"] for e in exprs} <= kinds
    assert all(e["apiVersion"] == "deploy.miosa.io/v1alpha1" and e["current"] for e in exprs)


def test_a_hostile_object_gets_a_verdict_not_an_error() -> None:
    """Whatever a tenant's object carries (odd types, no reason, huge lists), the script answers."""
    odd = {"type": "Ready", "status": "True", "message": 42}
    objects = [
        {"kind": "Deployment", "metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [odd]}},
        {"kind": "DeploymentVersion", "metadata": {}, "status": {"state": "building", "conditions": []}},
        {"kind": "RetentionPolicy", "metadata": {}, "status": {"conditions": [{"type": "Stalled", "status": "True"}]}},
        {"kind": "Deployment", "metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": [{"x": 1}]}},
    ]
    for obj in objects:
        health = argocd_health(obj)
        assert health["status"] in {"Healthy", "Progressing", "Degraded"} and isinstance(health["message"], str)


def test_argocd_cm_patch_is_generated_from_the_scripts() -> None:
    spec = importlib.util.spec_from_file_location("sync_integrations", REPO / "hack" / "sync-integrations.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ARGOCD / "argocd-cm.yaml").read_text() == module.render(), "run: python3 hack/sync-integrations.py"
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    for script in (ARGOCD / "deploy.miosa.io").glob("*/health.lua"):
        assert data[f"resource.customizations.health.deploy.miosa.io_{script.parent.name}"] == script.read_text()
