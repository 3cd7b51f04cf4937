"""What a dynamic version's verification workload says about the version (the health gate).

Only the version's own faults are terminal (PRODUCT.md, "Storage", last rule):

* its image cannot be pulled (an invalid name at once; pull errors for the whole deadline),
* its container keeps exiting (``CrashLoopBackOff`` after ``CRASH_RESTARTS`` restarts),
* it runs but does not become ready on its health path within the deadline.

Everything else is the cluster's and is waited out, shown on the version's conditions:
no pod because a ResourceQuota or admission refused it, a pod the scheduler cannot place,
a container the kubelet cannot configure (a missing Secret, an image that runs as root
under ``runAsNonRoot``): ``Stalled`` with the reason, while the version stays ``building``;
fixing it lets the same version go on.

**The deadline measures the version, not the cluster.**  It is derived from the pods
themselves, so a restarted operator keeps it and nothing is stored: a running container's
clock starts when it started (``state.running.startedAt``); a pull error's when its pod was
scheduled.  Time without a pod, unschedulable, or with the kubelet unable to create the
container never counts, and a fix that changes the pod template starts a new pod and a new
clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from ..api.conditions import Reason
from ..api.types import Obj

CRASH_RESTARTS = 2
"""Restarts after which a container in CrashLoopBackOff fails the version."""
INVALID_IMAGE = frozenset({"InvalidImageName", "ErrImageNeverPull"})
PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable", "SignatureValidationFailed"})
CONFIG_ERRORS = frozenset({"CreateContainerConfigError"})
MESSAGE_LIMIT = 1500


class Outcome(Enum):
    HEALTHY = "healthy"
    WAITING = "waiting"
    """Progressing, or retrying something transient (Reconciling)."""
    BLOCKED = "blocked"
    """Waiting on something a person must fix (Stalled); the version stays building."""
    FAILED = "failed"
    """The version's own fault: terminal."""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: Reason
    message: str

    @classmethod
    def healthy(cls) -> Verdict:
        return cls(Outcome.HEALTHY, Reason.READY, "the verification workload became ready")


@dataclass(frozen=True)
class Probe:
    """What the verification pods are checked against."""

    path: str
    port: int
    timeout: float


def is_available(workload: Obj | None, replicas: int = 1) -> bool:
    """All wanted replicas of the current generation are updated and ready."""
    if not workload:
        return False
    status = workload.get("status") or {}
    observed = status.get("observedGeneration", 0) >= (workload.get("metadata") or {}).get("generation", 0)
    updated = (status.get("updatedReplicas") or 0) >= replicas
    ready = (status.get("availableReplicas") or 0) >= replicas
    return observed and updated and ready


def judge(workload: Obj, pods: list[Obj], probe: Probe, now: datetime) -> Verdict:
    if is_available(workload):
        return Verdict.healthy()
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    verdicts = [_judge_pod(pod, probe, now) for pod in live]
    failed = [v for v in verdicts if v.outcome == Outcome.FAILED]
    if failed:
        return failed[0]
    refused = _creation_refused(workload)
    if refused is not None:
        return refused
    for outcome in (Outcome.BLOCKED, Outcome.WAITING):
        found = [v for v in verdicts if v.outcome == outcome]
        if found:
            return found[0]
    return Verdict(Outcome.WAITING, Reason.BUILDING, "health gate: waiting for the verification pod to be created")


def _creation_refused(workload: Obj) -> Verdict | None:
    """The ReplicaSet could not create the pod (the apps/v1 Deployment's ReplicaFailure)."""
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            message = str(condition.get("message") or condition.get("reason") or "")
            reason = Reason.QUOTA_EXCEEDED if "exceeded quota" in message else Reason.POD_CREATION_REFUSED
            return Verdict(Outcome.BLOCKED, reason, _cut(f"the verification pod cannot be created: {message}"))
    return None


def _judge_pod(pod: Obj, probe: Probe, now: datetime) -> Verdict:
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    scheduled = _condition(status, "PodScheduled")
    if scheduled is None or scheduled.get("status") != "True":
        if scheduled is not None and scheduled.get("reason") == "Unschedulable":
            why = scheduled.get("message") or "no node fits it"
            return Verdict(
                Outcome.BLOCKED, Reason.PODS_UNSCHEDULABLE, _cut(f"the verification pod {name} cannot be scheduled: {why}")
            )
        return Verdict(Outcome.WAITING, Reason.BUILDING, f"health gate: the verification pod {name} waits for the scheduler")
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    scheduled_at = _time(scheduled.get("lastTransitionTime")) or now
    for container in containers:
        verdict = _judge_container(name, container, probe, now, scheduled_at)
        if verdict is not None:
            return verdict
    started = [
        _time(((c.get("state") or {}).get("running") or {}).get("startedAt")) for c in status.get("containerStatuses") or []
    ]
    running_since = min((s for s in started if s is not None), default=None)
    if running_since is None:
        return Verdict(Outcome.WAITING, Reason.BUILDING, f"health gate: the containers of {name} are being created")
    if now - running_since > timedelta(seconds=probe.timeout):
        return Verdict(
            Outcome.FAILED,
            Reason.HEALTH_CHECK_FAILED,
            _cut(
                f"the verification workload did not become ready on {probe.path} (port {probe.port}) within "
                f"{probe.timeout:.0f}s of starting: {_summary(pod)}"
            ),
        )
    return Verdict(Outcome.WAITING, Reason.BUILDING, f"health gate: waiting for {name} to become ready on {probe.path}")


def _judge_container(name: str, container: Obj, probe: Probe, now: datetime, scheduled_at: datetime) -> Verdict | None:
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason, detail = waiting.get("reason") or "", waiting.get("message") or ""
    image = container.get("image", "")
    if reason in INVALID_IMAGE:
        return Verdict(Outcome.FAILED, Reason.IMAGE_PULL_FAILED, _cut(f"image {image!r} cannot be pulled: {reason} {detail}"))
    if reason in PULL_ERRORS:
        if now - scheduled_at > timedelta(seconds=probe.timeout):
            return Verdict(
                Outcome.FAILED,
                Reason.IMAGE_PULL_FAILED,
                _cut(f"image {image!r} could not be pulled within {probe.timeout:.0f}s: {reason} {detail}"),
            )
        return Verdict(
            Outcome.WAITING, Reason.BUILDING, _cut(f"health gate: pulling {image!r} failed, retrying: {reason} {detail}")
        )
    if reason == "CrashLoopBackOff" and (container.get("restartCount") or 0) >= CRASH_RESTARTS:
        last = ((container.get("lastState") or {}).get("terminated")) or {}
        exit_text = f"exit code {last.get('exitCode')}" if "exitCode" in last else "it exited"
        why = " ".join(str(x) for x in (last.get("reason"), last.get("message")) if x)
        return Verdict(
            Outcome.FAILED,
            Reason.CRASH_LOOP,
            _cut(
                f"container {container.get('name')!r} of {name} keeps exiting ({exit_text}, "
                f"{container.get('restartCount')} restarts){': ' + why if why else ''}"
            ),
        )
    if reason in CONFIG_ERRORS:
        return Verdict(
            Outcome.BLOCKED,
            Reason.CONTAINER_CONFIG_ERROR,
            _cut(f"container {container.get('name')!r} of {name} cannot start as configured: {detail or reason}"),
        )
    return None


def _condition(status: Obj, type_: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _summary(pod: Obj) -> str:
    status: Obj = pod.get("status") or {}
    not_ready = [
        f"{c.get('type')}: {c.get('message') or c.get('reason') or c.get('status')}"
        for c in status.get("conditions") or []
        if c.get("status") != "True"
    ]
    return f"pod {(pod.get('metadata') or {}).get('name', '?')} {status.get('phase', '?')} {'; '.join(not_ready)}".strip()


def _time(raw: Any) -> datetime | None:
    if not raw:
        return None
    if isinstance(raw, datetime):
        return raw
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def _cut(message: str) -> str:
    return " ".join(message.split())[:MESSAGE_LIMIT]
