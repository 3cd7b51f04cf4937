"""Argo CD's health verdict on an object, by our integrations/argocd health.lua scripts.

Argo CD runs health.lua in gopher-lua, a Lua 5.1: the scripts run in Lua 5.1 here (lupa),
with ``obj`` a global table converted from the object's JSON as Argo CD converts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

ARGOCD = Path(__file__).resolve().parents[2] / "integrations" / "argocd"


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    script = (ARGOCD / "deploy.miosa.io" / obj["kind"] / "health.lua").read_text()
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return dict(result.items())
