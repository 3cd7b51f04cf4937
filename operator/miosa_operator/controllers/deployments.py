"""Make a Deployment's live workload run the version its promotion policy asks for.

``reconcile`` is level-based: it computes the target version (``domain.promotion``),
renders and applies its workload (``render.live``), then either completes the rollout
(target ``ready`` with ``promotedAt``, previous live ``archived``, a history entry), keeps
waiting (``Retry``), or, past ``progressDeadlineSeconds``, reverts to the previous live
version and records why.  The rollout in progress lives in ``status.rollout`` so a restarted
operator resumes it with the same deadline.  ``spec`` is never written: GitOps tools own it.

**Promotion and collection cannot race.**  Before a rollout starts, the version is marked
(``status.promotion``) by a write with its resourceVersion as precondition; the collector
claims a version (``status.collectionClaimedAt``) the same way and never claims a marked
one, and a claimed version is refused here and by the webhook (``check_promotable``).  Both
writes compare-and-swap the same object, so exactly one of them wins.  The mark is dropped
once the Deployment's status names the version live (or the rollout ended otherwise), so a
collector never sees an unmarked version that is live but not yet recorded as live.

**Only own objects are managed** (``controllers.owned``): the live workload, its Service and
its PodDisruptionBudget are created by the operator, recorded by uid in
``status.ownedObjects``, and a same-named object somebody else made is a ``NameConflict``
(Stalled, a Warning event, retried), never adopted or overwritten.

**Numbers never repeat for a name**: the id write of a new Deployment seeds its version
counter from the versions of its name (``domain.numbering``), and ``Auto`` only considers
versions of this incarnation (``status.deploymentId`` equal to its ``status.id``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

from ..api import meta
from ..api.conditions import ConditionType, EventReason, Reason
from ..api.models import (
    Deployment,
    DeploymentVersion,
    HistoryAction,
    HistoryEntry,
    PromotionPolicy,
    VersionKind,
    VersionState,
)
from ..api.types import Obj
from ..domain.conditions import Health, health_conditions, set_condition
from ..domain.ids import new_deployment_id
from ..domain.ownership import Owner, budget_drifted, service_drifted, workload_drifted
from ..domain.promotion import Refusal, VersionView, check_promotable, classify, desired_version
from ..kube.client import Conflict, KubeApi, NotFound
from ..render import live, pods
from ..settings import Settings
from .common import Clock, EventSink, Retry, iso, object_ref, utcnow
from .owned import NameConflictError, OwnedObjects, Recorder
from .versions import seed_counter

log = logging.getLogger(__name__)

OPERATOR_ACTOR = "miosa-operator"
STATUS_WRITE_ATTEMPTS = 5


class Superseded(Exception):
    """The Deployment this reconcile works for was deleted (a namesake may exist)."""


HISTORY_LIMIT = 50
REVERTED_LIMIT = 20
# Written by earlier releases; Reconciling replaces it (kstatus), so it is dropped when seen.
_RETIRED_PROGRESSING = "Progressing"


class DeploymentController:
    def __init__(
        self,
        kube: KubeApi,
        config: Settings,
        events: EventSink,
        static_server: live.StaticServer,
        clock: Clock = utcnow,
    ) -> None:
        self.kube, self.config, self.events, self.static_server, self.clock = kube, config, events, static_server, clock
        self.owned = OwnedObjects(kube)
        self.defaults = pods.PodDefaults.from_settings(config)

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, body: Obj) -> None:
        try:
            deployment = self._ensure_id(Deployment.model_validate(body))
            deployment = self._consume_retry(deployment)
            try:
                self._reconcile(deployment)
            except NameConflictError as conflict:
                self._name_conflict(deployment, conflict)
        except Superseded as gone:  # this body's Deployment no longer exists: nothing left to do
            log.info("%s", gone)

    def _reconcile(self, deployment: Deployment) -> None:
        versions = self._versions(deployment)
        self._prune_claims(deployment, versions)
        target = self._target(deployment, versions)
        if target is None:
            self._nothing_to_run(deployment)
            return
        if self._held_after_revert(deployment, target):
            self._hold_after_revert(deployment, target, versions)
            return
        version = versions.get(target)
        refusal = self._unpromotable(deployment, target, version)
        if refusal:
            self._refuse(deployment, refusal)
            return
        assert version is not None
        if target == deployment.status.live_version and deployment.status.rollout is None:
            self._keep_live(deployment, version)
            return
        self._roll_out(deployment, version, versions)

    def _ensure_id(self, deployment: Deployment) -> Deployment:
        """A new incarnation gets its id, its counter seeded above its name's versions, and an
        empty record of owned objects, in one compare-and-swap write."""
        if deployment.status.id:
            return deployment
        ns, name = deployment.metadata.namespace, deployment.metadata.name
        last = max(deployment.status.last_version_number or 0, seed_counter(self.kube, ns, name, deployment.metadata.uid))
        try:
            body = self.kube.patch_status(
                meta.DEPLOYMENT_PLURAL,
                ns,
                name,
                {"id": new_deployment_id(), "lastVersionNumber": last, "ownedObjects": []},
                resource_version=deployment.metadata.resource_version,
            )
        except Conflict as exc:  # a version claimed a number (and maybe set the id) meanwhile
            raise Retry("deployment changed while assigning its id", delay=0.2, planned=False) from exc
        return Deployment.model_validate(body)

    def _versions(self, deployment: Deployment) -> VersionsOf:
        return VersionsOf(self.kube, deployment)

    def _prune_claims(self, deployment: Deployment, versions: Mapping[str, DeploymentVersion]) -> None:
        """Drop number claims nobody will release: of versions deleted before they recorded
        their number, and of numbered ones whose release a process that died still owed
        (``claim_releases`` batches them).  A claim is only ever reused by its version while
        that has no number, so dropping a recorded one changes nothing else."""
        if not deployment.status.pending_numbers:
            return
        unnumbered = {v.metadata.uid for v in versions.values() if not v.status.version_number}
        stale = [uid for uid in deployment.status.pending_numbers or {} if uid not in unnumbered]
        if stale:
            self._patch_status(deployment, {"pendingNumbers": {uid: None for uid in stale}})

    def _target(self, deployment: Deployment, versions: Mapping[str, DeploymentVersion]) -> str | None:
        auto = deployment.spec.promotion_policy == PromotionPolicy.AUTO  # only Auto looks at them all
        return desired_version(
            deployment.spec.promotion_policy,
            deployment.spec.promoted_version,
            deployment.metadata.name,
            [VersionView.from_model(v) for v in versions.values()] if auto else [],
            reverted=deployment.status.reverted_versions or [],
            deployment_id=deployment.status.id,
        )

    def _consume_retry(self, deployment: Deployment) -> Deployment:
        """A new ``deploy.miosa.io/retry: <version>@<time>`` releases that version from
        ``revertedVersions`` (so it is no longer held, nor skipped by Auto), once per value.
        An annotation, not spec: GitOps owns spec, and a retry is an act, not a state."""
        token = deployment.metadata.annotations.get(meta.ANNOTATION_RETRY)
        if not token or token == deployment.status.last_retry_token:
            return deployment
        version = token.partition("@")[0]
        reverted = [name for name in deployment.status.reverted_versions or [] if name != version]
        return self._patch_status(deployment, {"lastRetryToken": token, "revertedVersions": reverted})

    def _held_after_revert(self, deployment: Deployment, target: str) -> bool:
        """A reverted rollout is not retried until the spec changes (a new generation)."""
        status = deployment.status
        reverted = target in (status.reverted_versions or [])
        return reverted and status.reverted_generation == deployment.metadata.generation and status.rollout is None

    def _unpromotable(self, deployment: Deployment, target: str, version: DeploymentVersion | None) -> Refusal | None:
        view = VersionView.from_model(version) if version else None
        if view and target == deployment.status.live_version and view.state == VersionState.READY:
            return None
        return check_promotable(deployment.metadata.name, deployment.spec.kind, target, view)

    # ------------------------------------------------------------------ steady state
    def _keep_live(self, deployment: Deployment, version: DeploymentVersion) -> None:
        workload = self._apply(deployment, version)
        if version.status.promotion is not None:  # left by a rollout that died after recording it live
            self._unmark(version)
        if live.rolled_out(workload, version.status.id or "", deployment.spec.replicas):
            message = f"version {version.metadata.name} (#{version.status.version_number}) is live"
            self._write_health(deployment, Health(True, Reason.LIVE, message))
            return
        message = f"the live workload is not fully available: waiting for {deployment.spec.replicas} available replicas"
        self._write_health(deployment, Health.reconciling(Reason.SCALING, message))
        raise Retry("live workload not fully available", delay=self.config.poll_interval)

    def _nothing_to_run(self, deployment: Deployment) -> None:
        message = "no version is promoted (spec.promotedVersion is empty); nothing runs"
        self._write_health(deployment, Health(True, Reason.NOTHING_PROMOTED, message))

    def _refuse(self, deployment: Deployment, refusal: Refusal) -> None:
        """The target cannot go live (yet): the live version, if any, keeps serving.

        Waiting ends by itself: the version controller wakes this Deployment when the version
        it names becomes ready or fails (``ANNOTATION_VERSION_SETTLED``), and a restarted
        operator resumes every Deployment.
        """
        live = deployment.status.live_version
        message = f"{refusal.message}; {live or 'nothing'} stays live"
        if not refusal.final:
            self._write_health(deployment, Health.reconciling(refusal.reason, f"{message} until it is ready"))
            return
        if self._write_health(deployment, Health.stalled(refusal.reason, message)):
            self.events.warning(object_ref(deployment), refusal.reason, refusal.message)

    def _hold_after_revert(self, deployment: Deployment, target: str, versions: Mapping[str, DeploymentVersion]) -> None:
        """Keep the version the revert put back serving, and keep saying why the target is not live."""
        live = versions.get(deployment.status.live_version or "")
        if live is not None:
            self._apply(deployment, live)
            message = (
                f"the rollout of {target} failed and was reverted; {live.metadata.name} (#{live.status.version_number}) "
                "stays live until spec changes"
            )
            self._write_health(deployment, Health.stalled(Reason.ROLLOUT_REVERTED, message))
            return
        message = f"the rollout of {target} failed and there was nothing to revert to; change spec to retry"
        self._write_health(deployment, Health.stalled(Reason.PROGRESS_DEADLINE_EXCEEDED, message))

    # ------------------------------------------------------------------ rollouts
    def _roll_out(self, deployment: Deployment, version: DeploymentVersion, versions: Mapping[str, DeploymentVersion]) -> None:
        rollout = deployment.status.rollout
        if rollout is None or rollout.version != version.metadata.name:
            superseded = versions.get(rollout.version) if rollout is not None else None
            self._mark(deployment, version)
            deployment = self._start_rollout(deployment, version, versions)
            rollout = deployment.status.rollout
            if superseded is not None:
                self._unmark(superseded)
        assert rollout is not None
        workload = self._apply(deployment, version)
        if live.rolled_out(workload, version.status.id or "", deployment.spec.replicas):
            self._complete(deployment, version, versions)
            return
        deadline = timedelta(seconds=deployment.spec.rollout.progress_deadline_seconds)
        if self.clock() - rollout.started_at > deadline:
            self._rollout_failed(deployment, version, versions)
            return
        raise Retry(f"rolling out {version.metadata.name}", delay=self.config.poll_interval)

    def _start_rollout(
        self, deployment: Deployment, version: DeploymentVersion, versions: Mapping[str, DeploymentVersion]
    ) -> Deployment:
        live = deployment.status.live_version
        live_version = versions.get(live or "")
        live_number = live_version.status.version_number if live_version is not None else None
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
        self.events.normal(object_ref(deployment), EventReason.ROLLOUT_STARTED, message)
        relaxed = pods.relaxations(deployment) if version.spec.kind == VersionKind.DYNAMIC else []
        if relaxed:
            self.events.warning(
                object_ref(deployment), Reason.SECURITY_RELAXED, "Pod Security restricted relaxed: " + "; ".join(relaxed)
            )
        conditions = self._conditions(deployment, Health.reconciling(Reason.ROLLING_OUT, message), now=now)
        return self._patch_status(deployment, {"rollout": rollout, "conditions": conditions})

    def _complete(self, deployment: Deployment, version: DeploymentVersion, versions: Mapping[str, DeploymentVersion]) -> None:
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
        live = f"version {version.metadata.name} (#{version.status.version_number}) is live"
        message = f"{live} ({rollout.action.value})"
        status = {
            "liveVersion": version.metadata.name,
            "liveVersionNumber": version.status.version_number,
            "rollout": None,
            "history": self._history(deployment, entry),
            "observedGeneration": deployment.metadata.generation,
            "conditions": self._conditions(
                deployment,
                Health(True, Reason.LIVE, live),  # what _keep_live says, so a steady reconcile writes nothing
                rollout_failed=(False, Reason.ROLLOUT_COMPLETE, "the last rollout completed"),
                now=now,
            ),
        }
        self._patch_status(deployment, status)
        self._unmark(version)  # only now: the Deployment's status names it live
        reason = EventReason.ROLLED_BACK if rollout.action == HistoryAction.ROLLBACK else EventReason.PROMOTED
        self.events.normal(object_ref(deployment), reason, message)

    def _rollout_failed(
        self, deployment: Deployment, version: DeploymentVersion, versions: Mapping[str, DeploymentVersion]
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
        event: Reason | EventReason
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
            reason, event = Reason.ROLLOUT_REVERTED, Reason.ROLLOUT_REVERTED
        else:
            message = f"{why}; no previous version to revert to" if previous is None else f"{why}; autoRevert is off"
            reason, event = Reason.PROGRESS_DEADLINE_EXCEEDED, EventReason.ROLLOUT_FAILED
        status["conditions"] = self._conditions(
            deployment,
            Health.stalled(reason, message),
            rollout_failed=(True, Reason.PROGRESS_DEADLINE_EXCEEDED, message),
            now=now,
        )
        self.events.warning(object_ref(deployment), event, message)
        self._patch_status(deployment, status)
        self._unmark(version)

    # ------------------------------------------------------------------ versions
    def _mark(self, deployment: Deployment, version: DeploymentVersion) -> None:
        """Mark ``version`` as being rolled out, unless retention claimed it first (compare-and-swap)."""
        mark = version.status.promotion
        if mark is not None and mark.deployment_uid == deployment.metadata.uid:
            return
        status = {"promotion": {"deploymentUid": deployment.metadata.uid, "since": iso(self.clock())}}
        try:
            self.kube.patch_status(
                meta.VERSION_PLURAL,
                version.metadata.namespace,
                version.metadata.name,
                status,
                resource_version=version.metadata.resource_version,
            )
        except Conflict as exc:  # it changed since it was read (retention may have claimed it): decide again
            raise Retry(
                f"version {version.metadata.name} changed while marking it for rollout", delay=0.2, planned=False
            ) from exc

    def _unmark(self, version: DeploymentVersion) -> None:
        try:
            self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, {"promotion": None})
        except NotFound:
            pass

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
        self.events.normal(object_ref(version), EventReason.ARCHIVED, "promoted out of; still bootable for rollback")

    # ------------------------------------------------------------------ workload
    def _apply(self, deployment: Deployment, version: DeploymentVersion) -> Obj:
        """Service, budget and workload of ``version``, ours only (``NameConflictError`` otherwise)."""
        owner = Owner(
            kind=meta.DEPLOYMENT_KIND,
            name=deployment.metadata.name,
            uid=deployment.metadata.uid,
            id_label=meta.LABEL_DEPLOYMENT_ID,
            id_value=deployment.status.id or "",
        )
        recorder = Recorder(
            list(deployment.status.owned_objects or []),
            lambda entries: self._patch_status(deployment, {"ownedObjects": entries}),
            legacy=deployment.status.owned_objects is None,
        )
        service = live.live_service(deployment, live.serving_port(deployment, version))
        self.owned.ensure(owner, service, recorder, service_drifted)
        budget = live.disruption_budget(deployment)
        if budget is not None:
            self.owned.ensure(owner, budget, recorder, budget_drifted)
        elif recorder.uid("PodDisruptionBudget", live.workload_name(deployment)):
            self.owned.remove(
                owner, "PodDisruptionBudget", deployment.metadata.namespace, live.workload_name(deployment), recorder
            )
        desired = live.live_workload(deployment, version, self.static_server, self.defaults)
        return self.owned.ensure(owner, desired, recorder, _workload_changed)

    def _name_conflict(self, deployment: Deployment, conflict: NameConflictError) -> None:
        live = deployment.status.live_version
        message = f"{conflict.message}; {live or 'nothing'} stays live" if live else conflict.message
        if self._write_health(deployment, Health.stalled(Reason.NAME_CONFLICT, message)):
            self.events.warning(object_ref(deployment), Reason.NAME_CONFLICT, conflict.message)
        raise Retry(conflict.message, delay=max(self.config.poll_interval, 5.0))

    # ------------------------------------------------------------------ status plumbing
    def _history(self, deployment: Deployment, entry: HistoryEntry) -> list[Obj]:
        history = [*(deployment.status.history or []), entry][-HISTORY_LIMIT:]
        return [h.wire() for h in history]

    def _write_health(self, deployment: Deployment, health: Health) -> bool:
        """Write the conditions for ``health`` unless they are already there; True if written."""
        conditions = self._conditions(deployment, health, now=self.clock())
        current = [c.wire() for c in deployment.status.conditions or []]
        generation = deployment.metadata.generation
        if _without_times(conditions) == _without_times(current) and deployment.status.observed_generation == generation:
            return False
        self._patch_status(deployment, {"conditions": conditions, "observedGeneration": generation})
        return True

    def _conditions(
        self,
        deployment: Deployment,
        health: Health,
        *,
        rollout_failed: tuple[bool, Reason, str] | None = None,
        now: datetime,
    ) -> list[Obj]:
        generation = deployment.metadata.generation
        conditions = health_conditions(deployment.status.conditions, health, generation=generation, now=now)
        conditions = [c for c in conditions if c.type not in (_RETIRED_PROGRESSING, ConditionType.SECURITY_RELAXED)]
        relaxed = pods.relaxations(deployment) if deployment.spec.kind == VersionKind.DYNAMIC else []
        if relaxed:
            previous = [c for c in deployment.status.conditions or [] if c.type == ConditionType.SECURITY_RELAXED]
            conditions = set_condition(
                [*conditions, *previous],
                type=ConditionType.SECURITY_RELAXED,
                status=True,
                reason=Reason.SECURITY_RELAXED,
                message="Pod Security restricted is relaxed: " + "; ".join(relaxed),
                generation=generation,
                now=now,
            )
        if rollout_failed is not None:
            status, reason, message = rollout_failed
            conditions = set_condition(
                conditions,
                type=ConditionType.ROLLOUT_FAILED,
                status=status,
                reason=reason,
                message=message,
                generation=generation,
                now=now,
            )
        return [c.wire() for c in conditions]

    def _patch_status(self, deployment: Deployment, status: Obj) -> Deployment:
        """Write status onto this very Deployment, never onto a namesake created since.

        A reconcile can outlive its object (deleted while it ran, another one created under the
        same name at once); a write by name alone would land on the new one.  So every write is
        a compare-and-swap: on a conflict the object is read again and the write repeated only
        if it is still the same object (same uid).  Our status fields are written by this
        controller alone (kopf runs one handler per object at a time), so repeating the merge
        patch on the newer resourceVersion is safe.
        """
        ns, name = deployment.metadata.namespace, deployment.metadata.name
        resource_version = deployment.metadata.resource_version or None
        for _ in range(STATUS_WRITE_ATTEMPTS):
            try:
                body = self.kube.patch_status(meta.DEPLOYMENT_PLURAL, ns, name, status, resource_version=resource_version)
                return Deployment.model_validate(body)
            except Conflict:
                current = self.kube.get(meta.DEPLOYMENT_PLURAL, ns, name)
                if current is None or current["metadata"].get("uid") != deployment.metadata.uid:
                    raise Superseded(
                        f"Deployment {ns}/{name} (uid {deployment.metadata.uid}) was deleted; not writing its status"
                    ) from None
                resource_version = current["metadata"]["resourceVersion"]
            except NotFound:
                raise Superseded(f"Deployment {ns}/{name} was deleted; not writing its status") from None
        raise Retry(f"Deployment {name} keeps changing while its status is written", delay=0.5, planned=False)


def _workload_changed(desired: Obj, current: Obj) -> bool:
    hash_key = meta.ANNOTATION_RENDERED_HASH
    rendered = (current["metadata"].get("annotations") or {}).get(hash_key)
    return rendered != desired["metadata"]["annotations"][hash_key] or workload_drifted(desired, current)


def _without_times(conditions: list[Obj]) -> list[Obj]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]


class VersionsOf(Mapping[str, DeploymentVersion]):
    """A Deployment's versions by name, read as little as the decision needs.

    A reconcile used to LIST every version of its Deployment; with 200 versions that is
    ~0.7 MB of JSON parsed into models for each of them, for every Deployment at every start
    of the operator, though a ``Manual`` Deployment only ever looks at a few by name (the
    promoted, live and rollout ones).  So a name is read with one GET, and the LIST happens
    only when all of them matter (``Auto``'s newest ready version, claims to prune).  Like the
    LIST, only versions whose ``spec.deploymentRef`` names this Deployment count.
    """

    def __init__(self, kube: KubeApi, deployment: Deployment) -> None:
        self._kube, self._deployment = kube, deployment
        self._all: dict[str, DeploymentVersion] | None = None
        self._one: dict[str, DeploymentVersion | None] = {}

    def __getitem__(self, name: object) -> DeploymentVersion:
        if not isinstance(name, str) or not name:
            raise KeyError(name)
        if self._all is not None:
            return self._all[name]
        if name not in self._one:
            body = self._kube.get(meta.VERSION_PLURAL, self._deployment.metadata.namespace, name)
            self._one[name] = self._mine(DeploymentVersion.model_validate(body)) if body else None
        found = self._one[name]
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._listed())

    def __len__(self) -> int:
        return len(self._listed())

    def _listed(self) -> dict[str, DeploymentVersion]:
        if self._all is None:
            # By the frozen spec, not the labels: a version is labelled once numbered, and a
            # version holding a claim must be found (``_prune_claims``) before it is.
            selector = f"spec.deploymentRef.name={self._deployment.metadata.name}"
            items = self._kube.list(meta.VERSION_PLURAL, self._deployment.metadata.namespace, field_selector=selector)
            parsed = (self._mine(DeploymentVersion.model_validate(item)) for item in items)
            self._all = {v.metadata.name: v for v in parsed if v is not None}
        return self._all

    def _mine(self, version: DeploymentVersion) -> DeploymentVersion | None:
        return version if version.spec.deployment_ref.name == self._deployment.metadata.name else None
