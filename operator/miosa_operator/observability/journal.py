"""The journal: what the operator writes to status, said in a log line and counted.

``JournaledKube`` is the ``Kube`` gateway the controllers get; it passes every call through
and, after a status write succeeded, hands the patch and the object it produced to
``Journal.status_written``.  Only facts that the API server accepted are journaled, once per
write, so a retried reconcile cannot count a rollout twice and a failed write counts nothing.

What is journaled (one info line each, with the object's namespace, name and version id):

* a DeploymentVersion's ``state`` changing (building, ready, failed, archived, ready again),
  its ``promotedAt`` (it went live) and ``artifactsCollectedAt`` (retention removed its
  artifacts; counted in ``miosa_collected_versions_total``);
* a Deployment's rollout starting (``status.rollout`` set) and ending (``status.rollout``
  cleared with a history entry, or with the version added to ``revertedVersions``): counted
  in ``miosa_rollouts_total`` and timed from ``rollout.startedAt`` in
  ``miosa_rollout_duration_seconds``.  The start time comes from the object as the handler
  received it (``context``), or from the start written earlier in the same call, so a
  rollout resumed by a restarted operator is timed from its real start.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ..api import meta
from ..api.conditions import ConditionType
from ..api.types import Obj
from . import context, metrics
from .census import VersionCensus

log = logging.getLogger("miosa_operator.journal")

_ABSENT = object()


def _time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _ready(status: Obj) -> Obj:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), {})


def object_fields(body: Obj, version_id: str | None = None, version: str | None = None) -> Obj:
    """The ``extra`` of a log line about ``body`` (see ``logs.ObjectFields``)."""
    metadata = body.get("metadata") or {}
    ref = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "namespace": metadata.get("namespace"),
    }
    fields: Obj = {"k8s_ref": ref}
    if version_id:
        fields["version_id"] = version_id
    if version:
        fields["version"] = version
    return fields


class Journal:
    def __init__(self, census: VersionCensus | None = None) -> None:
        self.census = census

    def status_written(self, plural: str, patch: Obj, body: Obj) -> None:
        if plural == meta.VERSION_PLURAL:
            self._version(patch, body)
        elif plural == meta.DEPLOYMENT_PLURAL:
            self._deployment(patch, body)

    # ------------------------------------------------------------------ versions
    def _version(self, patch: Obj, body: Obj) -> None:
        if self.census is not None:  # current at once, not when the watch event arrives
            self.census.observe("MODIFIED", body)
        status, metadata = body.get("status") or {}, body.get("metadata") or {}
        extra = object_fields(body, status.get("id"), metadata.get("name"))
        where = f"deploymentversion {metadata.get('namespace')}/{metadata.get('name')}"
        if "state" in patch:
            ready = _ready(status)
            detail = f" ({ready.get('reason')}: {ready.get('message')})" if ready.get("reason") else ""
            number = f" #{status['versionNumber']}" if status.get("versionNumber") else ""
            log.info("%s%s is %s%s", where, number, patch["state"], detail, extra=extra)
        if patch.get("promotedAt"):
            log.info("%s went live", where, extra=extra)
        if patch.get("artifactsCollectedAt"):
            log.info("%s: artifacts collected (%s)", where, _ready(status).get("message", ""), extra=extra)
            metrics.collected(versions=1)

    # ------------------------------------------------------------------ deployments
    def _deployment(self, patch: Obj, body: Obj) -> None:
        rollout = patch.get("rollout", _ABSENT)
        if isinstance(rollout, dict):
            self._rollout_started(rollout, body)
        elif rollout is None:
            self._rollout_ended(patch, body)

    def _rollout_started(self, rollout: Obj, body: Obj) -> None:
        reconciling = context.current()
        replaced = (reconciling.rollout if reconciling is not None else None) or {}
        if replaced.get("version") and replaced.get("version") != rollout.get("version"):
            # The target changed before the previous rollout ended: that one never will.
            metrics.rollout_ended(replaced.get("action") or "unknown", "superseded", "", None)
        if reconciling is not None:
            reconciling.rollout = rollout
            reconciling.version = rollout.get("version")
        metadata = body.get("metadata") or {}
        version = rollout.get("version") or ""
        extra = object_fields(body, self._version_id(metadata.get("namespace"), version), version)
        previous = rollout.get("previous") or "nothing"
        log.info(
            "deployment %s/%s: %s started: %s (#%s) replaces %s",
            metadata.get("namespace"), metadata.get("name"), rollout.get("action"), version,
            rollout.get("versionNumber"), previous, extra=extra,
        )  # fmt: skip

    def _rollout_ended(self, patch: Obj, body: Obj) -> None:
        reconciling = context.current()
        started = (reconciling.rollout if reconciling is not None else None) or {}
        metadata = body.get("metadata") or {}
        where = f"deployment {metadata.get('namespace')}/{metadata.get('name')}"
        history = patch.get("history") or []
        entry = history[-1] if history else {}
        failed = "revertedVersions" in patch
        target = started.get("version") or (patch.get("revertedVersions") or [None])[-1] or entry.get("version") or ""
        action = started.get("action") or (entry.get("action") if not failed else None) or "unknown"
        if failed:
            outcome = "reverted" if entry else "failed"
            duration_action = "revert"
        else:
            outcome, duration_action = "live", entry.get("action") or action
        begin, end = _time(started.get("startedAt")), _time(entry.get("time")) or datetime.now(UTC)
        seconds = (end - begin).total_seconds() if begin and end else None
        metrics.rollout_ended(action, outcome, duration_action, seconds)
        took = f" after {seconds:.1f}s" if seconds is not None else ""
        extra = object_fields(body, self._version_id(metadata.get("namespace"), target), target)
        if outcome == "live":
            log.info(
                "%s: %s of %s (#%s) complete%s: it is live", where, action, target, entry.get("versionNumber"), took, extra=extra
            )
        elif outcome == "reverted":
            log.warning(
                "%s: %s of %s failed%s and was reverted to %s: %s",
                where, action, target, took, entry.get("version"), entry.get("reason", ""), extra=extra,
            )  # fmt: skip
        else:
            message = _ready(body.get("status") or {}).get("message", "")
            log.warning("%s: %s of %s failed%s: %s", where, action, target, took, message, extra=extra)

    def _version_id(self, namespace: str | None, name: str | None) -> str | None:
        if self.census is None or not namespace or not name:
            return None
        return self.census.version_id(namespace, name)


class JournaledKube:
    """The ``Kube`` gateway, with every accepted status write journaled."""

    def __init__(self, kube: Any, journal: Journal) -> None:
        self._kube, self._journal = kube, journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    def patch_status(self, plural: str, namespace: str, name: str, status: Obj, resource_version: str | None = None) -> Obj:
        body = self._kube.patch_status(plural, namespace, name, status, resource_version=resource_version)
        try:
            self._journal.status_written(plural, status, body)
        except Exception:  # the write happened; a journaling bug must not turn it into a retry
            log.exception("journaling a status write of %s %s/%s failed", plural, namespace, name)
        return body
