"""The health readers GitOps tools use, run on objects: kstatus itself, Flux's evaluator of our
healthCheckExprs, and our Argo CD health.lua (binaries from hack/build-binaries.sh)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from .slots import CACHE

BIN = CACHE / "bin"
FLUX_EXPRS = Path(__file__).resolve().parents[2] / "integrations" / "flux" / "healthcheckexprs.yaml"


def _run(command: list[str], objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stdin = "\n".join(json.dumps(o) for o in objects)
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def kstatus(*objects: dict[str, Any]) -> list[str]:
    """``status.Compute`` of sigs.k8s.io/cli-utils for each object."""
    return [r["status"] for r in _run([str(BIN / "kstatus")], list(objects))]


def flux_health(*objects: dict[str, Any]) -> list[str]:
    """kustomize-controller's verdict with integrations/flux/healthcheckexprs.yaml (kstatus for a
    kind without expressions); ``waiting`` when an expression cannot be evaluated yet (Flux
    polls again)."""
    return [r.get("status") or "waiting" for r in _run([str(BIN / "flux-health"), str(FLUX_EXPRS)], list(objects))]
