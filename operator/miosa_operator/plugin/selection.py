"""Which versions a command is about: selectors, attribution filters, the rollback target.

Design decisions:

* Filtering happens in the API server: one LIST with a label selector (the Deployment and
  the attribution labels the operator mirrors from spec) and, for ``--state``, a field
  selector on ``status.state`` (a selectable field of the CRD).
* Label values go through ``domain.labels.label_value``, the function the operator labels
  with, so ``--workspace team@acme.io`` selects the hashed label.  A hash prefix can
  collide, so the real ids in ``spec`` are compared afterwards: the label narrows, spec decides.
* The rollback target is "the previous live version": the newest history entry that is
  not live now and is still bootable.  History is the record of what actually went live
  (failed rollouts never complete, so they are not in it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api import meta
from ..api.types import Obj
from ..domain.labels import label_value

# The plugin imports neither pydantic nor the models; tests/unit/test_plugin.py checks these
# against api.models.VersionState and domain.states.PROMOTABLE.
STATES = ("created", "building", "ready", "failed", "archived")
PROMOTABLE = frozenset({"ready", "archived"})


@dataclass(frozen=True)
class AttributionFilter:
    """The ``--workspace``/``--user``/``--project`` flags: exact external ids."""

    workspace: str | None = None
    user: str | None = None
    project: str | None = None

    def pairs(self) -> list[tuple[str, str, str]]:
        """(label key, spec.attribution field, wanted id) for every flag given."""
        wanted = (
            (meta.LABEL_WORKSPACE, "externalWorkspaceId", self.workspace),
            (meta.LABEL_USER, "externalUserId", self.user),
            (meta.LABEL_PROJECT, "externalProjectId", self.project),
        )
        return [(label, field, value) for label, field, value in wanted if value]


def version_selector(deployment: str, attribution: AttributionFilter = AttributionFilter()) -> str:
    terms = [f"{meta.LABEL_DEPLOYMENT}={label_value(deployment)}"]
    terms += [f"{label}={label_value(value)}" for label, _, value in attribution.pairs()]
    return ",".join(terms)


def state_selector(state: str | None) -> str:
    return f"status.state={state}" if state else ""


def belongs(body: Obj, deployment: str, attribution: AttributionFilter = AttributionFilter()) -> bool:
    """True when spec really names ``deployment`` and the wanted ids (not just their hashes)."""
    spec = body.get("spec") or {}
    if (spec.get("deploymentRef") or {}).get("name") != deployment:
        return False
    actual = spec.get("attribution") or {}
    return all(actual.get(field) == value for _, field, value in attribution.pairs())


def newest_first(versions: Iterable[Obj]) -> list[Obj]:
    """By versionNumber, descending; not yet numbered versions (newest by nature) first."""

    def key(body: Obj) -> tuple[int, str]:
        number = (body.get("status") or {}).get("versionNumber")
        created = (body.get("metadata") or {}).get("creationTimestamp") or ""
        return (number if number is not None else 1 << 62, created)

    return sorted(versions, key=key, reverse=True)


def bootable(body: Obj | None) -> bool:
    """Ready or archived, artifacts not collected: what the webhook would accept."""
    if body is None:
        return False
    status = body.get("status") or {}
    state = status.get("state")
    return state in PROMOTABLE and not status.get("artifactsCollectedAt")


def previous_live(history: list[Mapping[str, Any]], live: str | None, versions: Mapping[str, Obj]) -> str | None:
    """The default rollback target: newest history entry that is not live and still bootable."""
    for entry in reversed(history):
        name = entry.get("version")
        if name and name != live and bootable(versions.get(name)):
            return str(name)
    return None
