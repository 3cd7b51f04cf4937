"""kstatus's verdict on an object, for tests that check GitOps tools will read us right.

A transcription of ``status.Compute`` of ``sigs.k8s.io/cli-utils/pkg/kstatus/status``
(v0.37.2, ``generic.go`` and ``status.go``) for custom resources, so unit tests need no Go
binary.  ``RULES`` are its documented rules as a table; tests/unit/test_kstatus.py checks the
transcription against it, and tests/e2e/test_health_tools.py checks the real library (built
by hack/build-binaries.sh) against the same table, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any


def kstatus(obj: dict[str, Any]) -> str:
    """Terminating, generation lag, Reconciling/Stalled (first True one in list order), then
    Ready; an object with none of these is Current."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    if "generation" in metadata and "observedGeneration" in status and status["observedGeneration"] != metadata["generation"]:
        return "InProgress"
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("status") == "True" and condition.get("type") == "Reconciling":
            return "InProgress"
        if condition.get("status") == "True" and condition.get("type") == "Stalled":
            return "Failed"
    for condition in conditions:
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return "Current"
            if condition.get("status") in ("False", "Unknown"):
                return "InProgress"
    return "Current"


def _obj(generation: int | None = 1, status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "namespace": "ns", **metadata}
    if generation is not None:
        meta["generation"] = generation
    obj: dict[str, Any] = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta}
    if status is not None:
        obj["status"] = status
    return obj


def _conditions(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"conditions": [{"type": t, "status": s, "reason": f"{t}{s}", "message": ""} for t, s in pairs]}


RULES: list[tuple[str, dict[str, Any], str]] = [
    ("no status at all is Current", _obj(), "Current"),
    ("no conditions is Current", _obj(status={"observedGeneration": 1}), "Current"),
    (
        "being deleted is Terminating",
        _obj(status=_conditions(("Ready", "True")), deletionTimestamp="2026-01-01T00:00:00Z"),
        "Terminating",
    ),
    (
        "an unobserved generation is InProgress",
        _obj(2, {"observedGeneration": 1, **_conditions(("Ready", "True"))}),
        "InProgress",
    ),
    ("no observedGeneration: no generation check", _obj(2, _conditions(("Ready", "True"))), "Current"),
    (
        "no metadata.generation: no generation check",
        _obj(None, {"observedGeneration": 5, **_conditions(("Ready", "True"))}),
        "Current",
    ),
    ("Reconciling=True is InProgress", _obj(status=_conditions(("Ready", "True"), ("Reconciling", "True"))), "InProgress"),
    ("Stalled=True is Failed", _obj(status=_conditions(("Ready", "True"), ("Stalled", "True"))), "Failed"),
    (
        "Reconciling and Stalled False: Ready decides",
        _obj(status=_conditions(("Reconciling", "False"), ("Stalled", "False"), ("Ready", "True"))),
        "Current",
    ),
    (
        "both True: the first in the list wins (Stalled)",
        _obj(status=_conditions(("Stalled", "True"), ("Reconciling", "True"))),
        "Failed",
    ),
    (
        "both True: the first in the list wins (Reconciling)",
        _obj(status=_conditions(("Reconciling", "True"), ("Stalled", "True"))),
        "InProgress",
    ),
    ("Ready=False is InProgress, never Failed", _obj(status=_conditions(("Ready", "False"))), "InProgress"),
    ("Ready=Unknown is InProgress", _obj(status=_conditions(("Ready", "Unknown"))), "InProgress"),
    ("Ready=True is Current", _obj(status=_conditions(("Ready", "True"))), "Current"),
    ("Stalled=Unknown is ignored", _obj(status=_conditions(("Stalled", "Unknown"), ("Ready", "True"))), "Current"),
    ("other conditions are ignored", _obj(status=_conditions(("Available", "False"), ("Degraded", "True"))), "Current"),
]
