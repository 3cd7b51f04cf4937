"""Make a Deployment's live workload run the version its promotion policy asks for.

``reconcile`` is level-based: it computes the target version (``domain.promotion``),
renders and applies its workload (``render.runtime``), then either completes the rollout
(target ``ready`` with ``promotedAt``, previous live ``archived``, a history entry), keeps
waiting (``Retry``), or, past ``progressDeadlineSeconds``, reverts to the previous live
version and records why.  The rollout in progress lives in ``status.rollout`` so a restarted
operator resumes it with the same deadline.  ``spec`` is never written: GitOps tools own it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..api import meta
from ..api.models import (
    Deployment,
    DeploymentVersion,
    HistoryAction,
    HistoryEntry,
    VersionState,
)
from ..domain.conditions import READY, set_condition
from ..domain.ids import new_deployment_id
from ..domain.labels import label_value
from ..domain.promotion import VersionView, classify, desired_version, promotion_error
from ..kube.client import Conflict, Kube
from ..render import runtime
from ..settings import Settings
from .common import Clock, EventSink, Retry, iso, object_ref, utcnow

Obj = dict[str, Any]

PROGRESSING = "Progressing"
ROLLOUT_FAILED = "RolloutFailed"
OPERATOR_ACTOR = "miosa-operator"
HISTORY_LIMIT = 50
_STAY_FAILED = "\0stay-failed"  # sentinel target: a failed first rollout, nothing to revert to
REVERTED_LIMIT = 20


class DeploymentController:
    def __init__(
        self,
        kube: Kube,
        config: Settings,
        events: EventSink,
        static_server: runtime.StaticServer,
        clock: Clock = utcnow,
    ) -> None:
        self.kube, self.config, self.events, self.static_server, self.clock = kube, config, events, static_server, clock

    # ------------------------------------------------------------------ admission
    def promotion_error(self, body: Obj, old: Obj | None) -> str | None:
        """Why the requested ``spec.promotedVersion`` must be refused (webhook), or None."""
        spec = body.get("spec") or {}
        requested = spec.get("promotedVersion")
        previous = ((old or {}).get("spec") or {}).get("promotedVersion")
        if not requested or requested == previous:
            return None
        namespace = body["metadata"].get("namespace", "")
        found = self.kube.get(meta.VERSION_PLURAL, namespace, requested)
        version = VersionView.from_body(found) if found else None
        deployment = Deployment.model_validate(body)
        return promotion_error(body["metadata"]["name"], deployment.spec.kind, requested, version)

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, body: Obj) -> None:
        deployment = self._ensure_id(Deployment.model_validate(body))
        versions = self._versions(deployment)
        self._prune_claims(deployment, versions)
        target = self._target(deployment, versions)
        live = deployment.status.live_version
        if target is _STAY_FAILED:
            return  # the failed rollout's conditions stay until the spec changes
        if target is None:
            self._nothing_to_run(deployment)
            return
        version = versions.get(target)
        problem = self._unpromotable(deployment, target, version)
        if problem:
            self._refuse(deployment, problem)
            return
        assert version is not None
        if target == live and deployment.status.rollout is None:
            self._keep_live(deployment, version)
            return
        self._roll_out(deployment, version, versions)

    def _ensure_id(self, deployment: Deployment) -> Deployment:
        if deployment.status.id:
            return deployment
        try:
            body = self.kube.patch_status(
                meta.DEPLOYMENT_PLURAL,
                deployment.metadata.namespace,
                deployment.metadata.name,
                {"id": new_deployment_id()},
                resource_version=deployment.metadata.resource_version,
            )
        except Conflict as exc:  # a version claimed a number (and maybe set the id) meanwhile
            raise Retry("deployment changed while assigning its id", delay=0.2, planned=False) from exc
        return Deployment.model_validate(body)

    def _versions(self, deployment: Deployment) -> dict[str, DeploymentVersion]:
        selector = f"{meta.LABEL_DEPLOYMENT}={label_value(deployment.metadata.name)}"
        items = self.kube.list(meta.VERSION_PLURAL, deployment.metadata.namespace, label_selector=selector)
        parsed = (DeploymentVersion.model_validate(item) for item in items)
        return {v.metadata.name: v for v in parsed if v.spec.deployment_ref.name == deployment.metadata.name}

    def _prune_claims(self, deployment: Deployment, versions: dict[str, DeploymentVersion]) -> None:
        """Drop number claims of versions deleted before they recorded their number."""
        existing = {v.metadata.uid for v in versions.values()}
        stale = [uid for uid in deployment.status.pending_numbers or {} if uid not in existing]
        if stale:
            self._patch_status(deployment, {"pendingNumbers": {uid: None for uid in stale}})

    def _target(self, deployment: Deployment, versions: dict[str, DeploymentVersion]) -> str | None:
        status = deployment.status
        reverted = status.reverted_versions or []
        target = desired_version(
            deployment.spec.promotion_policy,
            deployment.spec.promoted_version,
            deployment.metadata.name,
            [VersionView.from_model(v) for v in versions.values()],
            reverted=reverted,
        )
        failed_again = target in reverted and status.reverted_generation == deployment.metadata.generation
        if failed_again and status.rollout is None:
            # Do not retry a reverted rollout until the spec changes.
            return status.live_version or _STAY_FAILED
        return target

    def _unpromotable(self, deployment: Deployment, target: str, version: DeploymentVersion | None) -> str | None:
        view = VersionView.from_model(version) if version else None
        if view and target == deployment.status.live_version and view.state == VersionState.READY:
            return None
        return promotion_error(deployment.metadata.name, deployment.spec.kind, target, view)

    # ------------------------------------------------------------------ steady state
    def _keep_live(self, deployment: Deployment, version: DeploymentVersion) -> None:
        workload = self._apply(deployment, version)
        if runtime.rolled_out(workload, version.status.id or "", deployment.spec.replicas):
            self._write_conditions(
                deployment,
                ready=(True, "Live", f"version {version.metadata.name} (#{version.status.version_number}) is live"),
                progressing=(False, "Stable", "no rollout in progress"),
            )
            return
        self._write_conditions(
            deployment,
            ready=(False, "Scaling", f"waiting for {deployment.spec.replicas} available replicas"),
            progressing=(True, "Scaling", "the live workload is not fully available"),
        )
        raise Retry("live workload not fully available", delay=self.config.poll_interval)

    def _nothing_to_run(self, deployment: Deployment) -> None:
        self._write_conditions(
            deployment,
            ready=(False, "NoVersion", "no version is promoted (spec.promotedVersion is empty)"),
            progressing=(False, "NoVersion", "nothing to roll out"),
        )

    def _refuse(self, deployment: Deployment, problem: str) -> None:
        self.events.warning(object_ref(deployment), "InvalidPromotion", problem)
        live = deployment.status.live_version
        self._write_conditions(
            deployment,
            ready=(bool(live), "InvalidPromotion", f"{problem}; {live or 'nothing'} stays live"),
            progressing=(False, "InvalidPromotion", problem),
        )

    # ------------------------------------------------------------------ rollouts
    def _roll_out(self, deployment: Deployment, version: DeploymentVersion, versions: dict[str, DeploymentVersion]) -> None:
        rollout = deployment.status.rollout
        if rollout is None or rollout.version != version.metadata.name:
            deployment = self._start_rollout(deployment, version, versions)
            rollout = deployment.status.rollout
        assert rollout is not None
        workload = self._apply(deployment, version)
        if runtime.rolled_out(workload, version.status.id or "", deployment.spec.replicas):
            self._complete(deployment, version, versions)
            return
        deadline = timedelta(seconds=deployment.spec.rollout.progress_deadline_seconds)
        if self.clock() - rollout.started_at > deadline:
            self._rollout_failed(deployment, version, versions)
            return
        raise Retry(f"rolling out {version.metadata.name}", delay=self.config.poll_interval)

    def _start_rollout(
        self, deployment: Deployment, version: DeploymentVersion, versions: dict[str, DeploymentVersion]
    ) -> Deployment:
        live = deployment.status.live_version
        live_number = versions[live].status.version_number if live in versions else None
        action = classify(deployment.spec.promotion_policy, version.status.version_number, live_number)
        annotations = deployment.metadata.annotations
        actor = OPERATOR_ACTOR if action == HistoryAction.AUTO else annotations.get(meta.ANNOTATION_PROMOTED_BY, "")
        now = self.clock()
        rollout = {
            "version": version.metadata.name,
            "versionNumber": version.status.version_number,
            "previous": live,
            "action": action.value,
            "actor": actor,
            "reason": annotations.get(meta.ANNOTATION_CHANGE_CAUSE, ""),
            "startedAt": iso(now),
        }
        message = f"{action.value}: rolling out {version.metadata.name} (#{version.status.version_number})"
        self.events.normal(object_ref(deployment), "RolloutStarted", message)
        conditions = self._conditions(
            deployment, progressing=(True, "RollingOut", message), ready=None, failed=None, now=now
        )
        return self._patch_status(deployment, {"rollout": rollout, "conditions": conditions})

    def _complete(self, deployment: Deployment, version: DeploymentVersion, versions: dict[str, DeploymentVersion]) -> None:
        rollout = deployment.status.rollout
        assert rollout is not None
        now = self.clock()
        self._mark_promoted(version, now)
        previous = versions.get(rollout.previous or "")
        if previous is not None and previous.metadata.name != version.metadata.name:
            self._mark_archived(previous, now)
        entry = HistoryEntry(
            version=version.metadata.name,
            version_number=version.status.version_number,
            action=rollout.action,
            actor=rollout.actor,
            time=now,
            reason=rollout.reason,
        )
        message = f"version {version.metadata.name} (#{version.status.version_number}) is live ({rollout.action.value})"
        status = {
            "liveVersion": version.metadata.name,
            "liveVersionNumber": version.status.version_number,
            "rollout": None,
            "history": self._history(deployment, entry),
            "observedGeneration": deployment.metadata.generation,
            "conditions": self._conditions(
                deployment,
                ready=(True, "Live", message),
                progressing=(False, "RolloutComplete", message),
                failed=(False, "RolloutComplete", "the last rollout completed"),
                now=now,
            ),
        }
        self._patch_status(deployment, status)
        reason = "RolledBack" if rollout.action == HistoryAction.ROLLBACK else "Promoted"
        self.events.normal(object_ref(deployment), reason, message)

    def _rollout_failed(
        self, deployment: Deployment, version: DeploymentVersion, versions: dict[str, DeploymentVersion]
    ) -> None:
        rollout = deployment.status.rollout
        assert rollout is not None
        now = self.clock()
        seconds = deployment.spec.rollout.progress_deadline_seconds
        why = f"rollout of {version.metadata.name} did not become available within {seconds}s"
        previous = versions.get(rollout.previous or "")
        reverted = [*(deployment.status.reverted_versions or []), version.metadata.name][-REVERTED_LIMIT:]
        status: Obj = {
            "rollout": None,
            "revertedVersions": reverted,
            "revertedGeneration": deployment.metadata.generation,
            "observedGeneration": deployment.metadata.generation,
        }
        if deployment.spec.rollout.auto_revert and previous is not None:
            self._apply(deployment, previous)
            entry = HistoryEntry(
                version=previous.metadata.name,
                version_number=previous.status.version_number,
                action=HistoryAction.REVERT,
                actor=OPERATOR_ACTOR,
                time=now,
                reason=why,
            )
            status["history"] = self._history(deployment, entry)
            message = f"{why}; reverted to {previous.metadata.name} (#{previous.status.version_number})"
            still_live, ready_reason, event = True, "Reverted", "RolloutReverted"
        else:
            message = f"{why}; no previous version to revert to" if previous is None else f"{why}; autoRevert is off"
            still_live, ready_reason, event = False, "RolloutFailed", "RolloutFailed"
        status["conditions"] = self._conditions(
            deployment,
            ready=(still_live, ready_reason, message),
            progressing=(False, "ProgressDeadlineExceeded", why),
            failed=(True, "ProgressDeadlineExceeded", message),
            now=now,
        )
        self.events.warning(object_ref(deployment), event, message)
        self._patch_status(deployment, status)

    # ------------------------------------------------------------------ versions
    def _mark_promoted(self, version: DeploymentVersion, now: datetime) -> None:
        status: Obj = {"promotedAt": iso(now)}
        if version.status.state == VersionState.ARCHIVED:
            status["state"] = VersionState.READY.value  # the one edge back: a rollback target goes live
        self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, status)

    def _mark_archived(self, version: DeploymentVersion, now: datetime) -> None:
        if version.status.state != VersionState.READY:
            return
        status = {"state": VersionState.ARCHIVED.value, "archivedAt": iso(now)}
        self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, status)
        self.events.normal(object_ref(version), "Archived", "promoted out of; still bootable for rollback")

    # ------------------------------------------------------------------ workload
    def _apply(self, deployment: Deployment, version: DeploymentVersion) -> Obj:
        ns = deployment.metadata.namespace
        desired = runtime.live_workload(deployment, version, self.static_server)
        name = desired["metadata"]["name"]
        self._apply_service(deployment, version)
        current = self.kube.get_workload(ns, name)
        if current is None:
            try:
                return self.kube.create_workload(ns, desired)
            except Conflict:
                current = self.kube.get_workload(ns, name)
                assert current is not None
        wanted_hash = desired["metadata"]["annotations"][runtime.ANNOTATION_RENDERED_HASH]
        if (current["metadata"].get("annotations") or {}).get(runtime.ANNOTATION_RENDERED_HASH) == wanted_hash:
            return current
        patch = {"metadata": {"annotations": desired["metadata"]["annotations"]}, "spec": desired["spec"]}
        return self.kube.patch_workload(ns, name, patch)

    def _apply_service(self, deployment: Deployment, version: DeploymentVersion) -> None:
        desired = runtime.live_service(deployment, runtime.serving_port(deployment, version))
        ns, name = deployment.metadata.namespace, desired["metadata"]["name"]
        current = self.kube.get_service(ns, name)
        if current is None:
            try:
                self.kube.create_service(ns, desired)
            except Conflict:
                pass
            return
        if current["spec"].get("ports") != desired["spec"]["ports"]:
            self.kube.patch_service(ns, name, {"spec": {"ports": desired["spec"]["ports"]}})

    # ------------------------------------------------------------------ status plumbing
    def _history(self, deployment: Deployment, entry: HistoryEntry) -> list[Obj]:
        history = [*(deployment.status.history or []), entry][-HISTORY_LIMIT:]
        return [h.wire() for h in history]

    def _write_conditions(
        self,
        deployment: Deployment,
        *,
        ready: tuple[bool, str, str],
        progressing: tuple[bool, str, str],
    ) -> None:
        conditions = self._conditions(deployment, ready=ready, progressing=progressing, failed=None, now=self.clock())
        current = [c.wire() for c in deployment.status.conditions or []]
        if _without_times(conditions) == _without_times(current) and deployment.status.observed_generation == deployment.metadata.generation:
            return
        self._patch_status(deployment, {"conditions": conditions, "observedGeneration": deployment.metadata.generation})

    def _conditions(
        self,
        deployment: Deployment,
        *,
        ready: tuple[bool, str, str] | None,
        progressing: tuple[bool, str, str] | None,
        failed: tuple[bool, str, str] | None,
        now: datetime,
    ) -> list[Obj]:
        conditions = deployment.status.conditions
        for type_, value in ((READY, ready), (PROGRESSING, progressing), (ROLLOUT_FAILED, failed)):
            if value is None:
                continue
            status, reason, message = value
            conditions = set_condition(
                conditions,
                type=type_,
                status=status,
                reason=reason,
                message=message,
                generation=deployment.metadata.generation,
                now=now,
            )
        return [c.wire() for c in conditions or []]

    def _patch_status(self, deployment: Deployment, status: Obj) -> Deployment:
        body = self.kube.patch_status(meta.DEPLOYMENT_PLURAL, deployment.metadata.namespace, deployment.metadata.name, status)
        return Deployment.model_validate(body)


def _without_times(conditions: list[Obj]) -> list[Obj]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]

