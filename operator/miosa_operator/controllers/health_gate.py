"""Building a dynamic version: validate its runtime, then a health gate.

A short-lived verification workload (apps/v1 Deployment, rendered from the frozen runtime
config with the same readiness probe the live workload will have) must become available
within the configured deadline.  Its creation time is the deadline's start, so a
restarted operator keeps the same deadline.  It is owned by the version (garbage-collected
with it) and deleted as soon as the gate has decided either way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..api.conditions import EventReason, Reason
from ..api.models import DeploymentVersion, Runtime
from ..kube.client import Conflict, Kube, TransientApiError
from ..render import workloads
from ..settings import Settings
from .common import Clock, EventSink, Failure, Obj, Retry, object_ref, parse_time
from .gate_log import GateTranscript


class HealthGate:
    def __init__(
        self, kube: Kube, config: Settings, events: EventSink, clock: Clock, transcript: GateTranscript | None = None
    ) -> None:
        self.kube, self.config, self.events, self.clock = kube, config, events, clock
        self.transcript = transcript  # the version's build log, written when the gate decides

    def check(self, version: DeploymentVersion) -> Failure | None:
        """None when healthy; a Failure when not; ``Retry`` while the gate is running."""
        runtime = version.spec.runtime
        assert runtime is not None, "the CRD requires a runtime for dynamic versions"
        invalid = validate_runtime(runtime)
        if invalid:
            return self._decided(version, None, Failure(Reason.INVALID_RUNTIME, invalid))
        ns = version.metadata.namespace
        name = workloads.verification_name(version)
        timeout = self.config.health_gate_timeout
        workload = self.kube.get_workload(ns, name)
        if workload is None:
            workload = self._create(version, int(timeout))
        if workloads.is_available(workload):
            self._decided(version, workload, None)
            self.kube.delete_workload(ns, name)
            return None
        started = parse_time(workload["metadata"].get("creationTimestamp")) or self.clock()
        if self.clock() - started > timedelta(seconds=timeout):
            detail = self._why_not_ready(ns, workload)
            failure = Failure(
                Reason.HEALTH_CHECK_FAILED,
                f"verification workload did not become ready on {runtime.health_check_path} "
                f"(port {runtime.port}) within {timeout:.0f}s: {detail}",
            )
            self._decided(version, workload, failure)
            self.kube.delete_workload(ns, name)
            return failure
        raise Retry("health gate running", delay=self.config.poll_interval)

    def _decided(self, version: DeploymentVersion, workload: Obj | None, failure: Failure | None) -> Failure | None:
        if self.transcript is not None:
            self.transcript.decided(version, workload, failure)
        return failure

    def _create(self, version: DeploymentVersion, timeout: int) -> Obj:
        body = workloads.verification_workload(version, timeout)
        try:
            workload = self.kube.create_workload(version.metadata.namespace, body)
        except Conflict:  # created by an earlier attempt a moment ago
            workload = self.kube.get_workload(version.metadata.namespace, body["metadata"]["name"]) or body
        self.events.normal(
            object_ref(version), EventReason.HEALTH_GATE_STARTED, f"verification workload {body['metadata']['name']} created"
        )
        return workload

    def _why_not_ready(self, namespace: str, workload: Obj) -> str:
        conditions = (workload.get("status") or {}).get("conditions") or []
        messages = [f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}" for c in conditions]
        selector = ",".join(f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items())
        try:
            pods = self.kube.list_pods(namespace, selector)
        except TransientApiError:
            pods = []
        messages += [_pod_summary(pod) for pod in pods[:3]]
        if not pods:
            messages.append("no pod was created")
        return "; ".join(m.strip() for m in messages if m.strip())[:1500]


def _pod_summary(pod: Obj) -> str:
    status: dict[str, Any] = pod.get("status") or {}
    not_ready = [
        f"{c.get('type')}: {c.get('message') or c.get('reason') or c.get('status')}"
        for c in status.get("conditions") or []
        if c.get("status") != "True"
    ]
    return f"pod {pod['metadata']['name']} {status.get('phase', '?')} {'; '.join(not_ready)}"


def validate_runtime(runtime: Runtime) -> str:
    """What the schema cannot say about a runtime; empty when valid."""
    if any(c.isspace() for c in runtime.image):
        return f"runtime.image {runtime.image!r} contains whitespace"
    names = [e.name for e in runtime.env or []]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"runtime.env names are duplicated: {', '.join(duplicates)}"
    return ""
