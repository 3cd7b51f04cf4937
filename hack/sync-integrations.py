#!/usr/bin/env python3
"""Write integrations/argocd/argocd-cm.yaml from the health.lua scripts beside it.

Argo CD reads custom health checks from its argocd-cm ConfigMap, one key per kind
(``resource.customizations.health.<group>_<kind>``); the scripts are kept as files so they
can be read, linted and tested, and this patch is generated from them (a unit test checks
it is up to date: run ``python3 hack/sync-integrations.py`` after editing a script).
"""

from __future__ import annotations

import sys
from pathlib import Path

ARGOCD = Path(__file__).resolve().parents[1] / "integrations" / "argocd"
GROUP = "deploy.miosa.io"
HEADER = """\
# Argo CD health checks for deploy.miosa.io objects (docs/gitops.md, "Argo CD").
# Generated from integrations/argocd/deploy.miosa.io/*/health.lua by hack/sync-integrations.py.
# Merge into Argo CD's ConfigMap:
#   kubectl -n argocd patch configmap argocd-cm --patch-file integrations/argocd/argocd-cm.yaml
"""


def render() -> str:
    lines = [HEADER, "data:\n"]
    for script in sorted((ARGOCD / GROUP).glob("*/health.lua")):
        kind = script.parent.name
        lines.append(f"  resource.customizations.health.{GROUP}_{kind}: |\n")
        for line in script.read_text().splitlines():
            lines.append(f"    {line}\n" if line else "\n")
    return "".join(lines)


def main() -> int:
    (ARGOCD / "argocd-cm.yaml").write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
