"""kstatus's verdict on an object, for tests that check GitOps tools will read us right."""

from __future__ import annotations


def kstatus(obj: dict[str, object]) -> str:
    """kstatus's generic rules (sigs.k8s.io/cli-utils/pkg/kstatus/status, ``Compute``) for a
    custom resource: observedGeneration lag, Reconciling, Stalled, then Ready."""
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    metadata = obj.get("metadata") or {}
    assert isinstance(metadata, dict)
    if "observedGeneration" in status and status["observedGeneration"] != metadata.get("generation"):
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    if "Ready" in conditions:
        return "Current" if conditions["Ready"] == "True" else "InProgress"
    return "Current"
