"""Building a dynamic version: validate its runtime, then a health gate.

A short-lived verification workload (apps/v1 Deployment, rendered from the frozen runtime
config and the Deployment's pod settings, with the same readiness probe the live workload
will have) must become available.  ``domain.verification.judge`` reads it and its pods:

* healthy: the workload is deleted and the version becomes ready;
* the version's own fault (an image that cannot be pulled, a crash loop, readiness failing
  for the whole deadline of ``MIOSA_HEALTH_GATE_TIMEOUT``): deleted, the version ``failed``;
* waiting on the cluster (no pod because of a quota or admission, an unschedulable pod, a
  missing Secret): the version stays ``building`` with ``Stalled`` and the reason, and the
  gate keeps looking; fixing it (capacity, quota, the Deployment's settings, the Secret)
  lets the same version go on.  While the ReplicaSet cannot create its pod, the gate nudges
  the workload now and then (an annotation the Deployment controller copies to the
  ReplicaSet), so a raised quota is noticed within seconds, not after the ReplicaSet
  controller's own backoff of up to ~16 minutes.

The workload is the version's own object (``controllers.owned``): a same-named object
somebody else made is never adopted (``NameConflict``), and the pods that made it available
must run the rendered containers (a ReplicaSet adopts any orphan pod matching its selector).
It is owned by the version (garbage-collected with it) and deleted once the gate decided.
"""

from __future__ import annotations

from datetime import timedelta

from ..api import meta
from ..api.conditions import EventReason, Reason
from ..api.models import Deployment, DeploymentVersion, Runtime
from ..domain.conditions import Health, Progress, health_conditions
from ..domain.ownership import Owner, pod_runs, workload_drifted
from ..domain.verification import Outcome, Probe, Verdict, judge
from ..kube.client import ApiError, Conflict, KubeApi, NotFound, TransientApiError
from ..render import pods, verification
from ..settings import Settings
from .common import Clock, EventSink, Failure, Obj, Retry, iso, object_ref, parse_time
from .gate_log import GateTranscript
from .owned import NameConflictError, OwnedObjects, Recorder

NUDGE_INTERVAL = timedelta(seconds=10)
NUDGED = (Reason.QUOTA_EXCEEDED, Reason.POD_CREATION_REFUSED)


class HealthGate:
    def __init__(
        self, kube: KubeApi, config: Settings, events: EventSink, clock: Clock, transcript: GateTranscript | None = None
    ) -> None:
        self.kube, self.config, self.events, self.clock = kube, config, events, clock
        self.transcript = transcript  # the version's build log, written when the gate decides
        self.owned = OwnedObjects(kube)
        self.defaults = pods.PodDefaults.from_settings(config)

    @property
    def stalled_poll(self) -> float:
        """How often a gate waiting on a person looks again."""
        return max(self.config.poll_interval, 5.0)

    def check(self, version: DeploymentVersion, deployment: Obj | Deployment | None = None) -> Failure | None:
        """None when healthy; a Failure when not; ``Retry`` while the gate is running.

        A failed API request is never the version's fault: it propagates (the handler retries
        with backoff) after the version says so — ``Reconciling`` for a transient error,
        ``Stalled`` for a refusal an administrator must fix (e.g. the operator's permissions).
        """
        try:
            return self._check(version, deployment)
        except TransientApiError as exc:
            self._report_quietly(
                version,
                Health.reconciling(Reason.API_UNAVAILABLE, f"health gate: the Kubernetes API failed a request, retrying: {exc}"),
            )
            raise
        except (NotFound, Conflict):
            raise
        except ApiError as exc:
            self._report_quietly(
                version,
                Health.stalled(
                    Reason.API_UNAVAILABLE, f"health gate: the Kubernetes API refused a request of the operator: {exc}"
                ),
            )
            raise

    def _check(self, version: DeploymentVersion, deployment: Obj | Deployment | None) -> Failure | None:
        runtime = version.spec.runtime
        assert runtime is not None, "the CRD requires a runtime for dynamic versions"
        invalid = validate_runtime(runtime)
        if invalid:
            return self._decided(version, None, Failure(Reason.INVALID_RUNTIME, invalid))
        if isinstance(deployment, dict):
            deployment = Deployment.model_validate(deployment)
        timeout = self.config.health_gate_timeout
        desired = verification.verification_workload(version, int(timeout), deployment, self.defaults)
        workload = self._ensure(version, desired)
        pods = self._pods(version.metadata.namespace, desired)
        verdict = judge(workload, pods, Probe(runtime.health_check_path, runtime.port, timeout), self.clock())
        if verdict.outcome == Outcome.HEALTHY:
            verdict = _adopted_pods(desired, pods) or verdict
        if verdict.outcome in (Outcome.HEALTHY, Outcome.FAILED):
            failure = None if verdict.outcome == Outcome.HEALTHY else Failure(verdict.reason, verdict.message)
            self._decided(version, workload, failure)  # the transcript, before the workload goes
            self._delete(workload)
            return failure
        if verdict.outcome == Outcome.BLOCKED:
            self._report(version, Health.stalled(verdict.reason, verdict.message))
            if verdict.reason in NUDGED:
                self._nudge(workload)
            raise Retry(f"health gate: {verdict.message}", delay=self.stalled_poll)
        self._report(version, Health.reconciling(Reason.BUILDING, verdict.message))
        raise Retry("health gate running", delay=self.config.poll_interval)

    def _decided(self, version: DeploymentVersion, workload: Obj | None, failure: Failure | None) -> Failure | None:
        if self.transcript is not None:
            self.transcript.decided(version, workload, failure)
        return failure

    # ------------------------------------------------------------------ the workload
    def _ensure(self, version: DeploymentVersion, desired: Obj) -> Obj:
        owner = Owner(
            kind=meta.VERSION_KIND,
            name=version.metadata.name,
            uid=version.metadata.uid,
            id_label=meta.LABEL_VERSION_ID,
            id_value=version.status.id or "",
        )
        recorder = Recorder(list(version.status.owned_objects or []), lambda entries: self._record(version, entries))
        try:
            workload = self.owned.ensure(owner, desired, recorder, workload_drifted)
        except NameConflictError as conflict:
            self._report(version, Health.stalled(Reason.NAME_CONFLICT, conflict.message))
            raise Retry(f"health gate: {conflict.message}", delay=self.stalled_poll) from None
        if recorder.written:
            self.events.normal(
                object_ref(version),
                EventReason.HEALTH_GATE_STARTED,
                f"verification workload {desired['metadata']['name']} created",
            )
        return workload

    def _record(self, version: DeploymentVersion, entries: list[Obj]) -> None:
        self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, {"ownedObjects": entries})

    def _pods(self, namespace: str, desired: Obj) -> list[Obj]:
        selector = ",".join(f"{k}={v}" for k, v in desired["spec"]["selector"]["matchLabels"].items())
        try:
            return self.kube.list_pods(namespace, selector)
        except TransientApiError as exc:
            raise Retry(f"cannot list the verification pods: {exc}", delay=self.config.poll_interval, planned=False) from exc

    def _delete(self, workload: Obj) -> None:
        metadata = workload["metadata"]
        self.kube.delete_object("Deployment", metadata["namespace"], metadata["name"], uid=metadata.get("uid"))

    def _nudge(self, workload: Obj) -> None:
        """Make the ReplicaSet controller try to create the pod again now (see the module doc)."""
        metadata = workload["metadata"]
        last = parse_time((metadata.get("annotations") or {}).get(meta.ANNOTATION_NUDGED_AT))
        now = self.clock()
        if last is not None and now - last < NUDGE_INTERVAL:
            return
        patch = {"metadata": {"annotations": {meta.ANNOTATION_NUDGED_AT: iso(now)}}}
        self.kube.patch_object("Deployment", metadata["namespace"], metadata["name"], patch)

    # ------------------------------------------------------------------ the version's conditions
    def _report_quietly(self, version: DeploymentVersion, health: Health) -> None:
        try:
            self._report(version, health)
        except ApiError:  # the API is failing anyway; the retry will say it again
            pass

    def _report(self, version: DeploymentVersion, health: Health) -> None:
        """Say on the version what the gate waits for; a Warning event when it becomes Stalled."""
        now = self.clock()
        generation = version.metadata.generation
        conditions = [c.wire() for c in health_conditions(version.status.conditions, health, generation=generation, now=now)]
        current = [c.wire() for c in version.status.conditions or []]
        if _without_times(conditions) == _without_times(current):
            return
        before = next((c for c in current if c["type"] == "Ready"), {}).get("reason")
        self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, {"conditions": conditions})
        if health.progress == Progress.STALLED and before != health.reason:
            self.events.warning(object_ref(version), health.reason, health.message)


def _adopted_pods(desired: Obj, pods: list[Obj]) -> Verdict | None:
    """A ready pod that does not run the rendered containers made the workload available."""
    template = desired["spec"]["template"]["spec"]
    for pod in pods:
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or []
        )
        if ready and not pod_runs(template, pod):
            name = (pod.get("metadata") or {}).get("name")
            message = (
                f"pod {name!r} matches the verification workload's selector but was not created from it "
                "(another image or command); it is left untouched: delete it"
            )
            return Verdict(Outcome.BLOCKED, Reason.NAME_CONFLICT, message)
    return None


def _without_times(conditions: list[Obj]) -> list[Obj]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]


def validate_runtime(runtime: Runtime) -> str:
    """What the schema cannot say about a runtime; empty when valid."""
    if any(c.isspace() for c in runtime.image):
        return f"runtime.image {runtime.image!r} contains whitespace"
    names = [e.name for e in runtime.env or []]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"runtime.env names are duplicated: {', '.join(duplicates)}"
    return ""
