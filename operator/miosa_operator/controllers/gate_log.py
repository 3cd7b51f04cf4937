"""A dynamic version's build log: the transcript of its health gate.

A static version's ``build.log`` says how its bundle was verified; a dynamic version has no
bundle, so its log is what the health gate saw: the runtime it verified, when the
verification workload was created, every pod's phase, conditions and container states, the
events of the workload and its pods (scheduling, image pulls, probe failures — what the
kubelet reports), and the decision with its timing.  It is written once, when the gate
decides, to the same place as a static version's log
(``<releases>/<tenant>/<dep id>/<ver id>/build.log``) and recorded in ``status.buildLogUri``;
``kubectl miosa logs`` prints it.

Design decisions:

* **Read at the decision, not polled.** Everything in the transcript is still in the API
  when the gate decides (the workload is deleted right after), so the gate's polling stays
  one GET per check and the transcript costs a few reads once per version.
* **Lines carry their own time.** Each event or condition is stamped with the time it
  happened, so the log reads as a timeline; names and messages come from the tenant's pods
  and are escaped by ``BuildLog`` like any other line.
* **Written once.** ``put_bytes_if_absent``: a gate decided again after a crash keeps the
  first transcript.  A store fault raises ``Retry`` before the workload is deleted, so the
  gate decides again on the next call.
* The gate's outcome is also counted here (``miosa_health_gates_total``, timed from the
  workload's creation), the one place that knows both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..api.conditions import Reason
from ..api.models import DeploymentVersion
from ..ingest.buildlog import BuildLog
from ..kube.client import ApiError, KubeApi
from ..observability import metrics
from ..settings import Settings
from ..store.base import ArtifactStore, TransientStoreError
from ..store.router import join_uri
from .common import Clock, Failure, Obj, Retry, parse_time

MAX_PODS = 3
MAX_EVENTS = 50


class GateTranscript:
    def __init__(self, kube: KubeApi, store: ArtifactStore, config: Settings, clock: Clock) -> None:
        self.kube, self.store, self.config, self.clock = kube, store, config, clock

    def log_uri(self, version: DeploymentVersion) -> str:
        status = version.status
        assert status.deployment_id and status.id, "a version is numbered before it builds"
        return join_uri(self.config.releases_uri, version.metadata.namespace, status.deployment_id, status.id, "build.log")

    def decided(self, version: DeploymentVersion, workload: Obj | None, failure: Failure | None) -> None:
        """Write the transcript, point ``version.status.build_log_uri`` at it, count the outcome."""
        now = self.clock()
        started = parse_time(((workload or {}).get("metadata") or {}).get("creationTimestamp"))
        text = self.render(version, workload, failure, started, now)
        uri = self.log_uri(version)
        try:
            self.store.put_bytes_if_absent(uri, text, content_type="text/plain; charset=utf-8")
        except TransientStoreError as exc:
            raise Retry(f"artifact store: {exc}", delay=5.0, planned=False) from exc
        version.status.build_log_uri = uri
        seconds = (now - started).total_seconds() if started else None
        if failure is None:
            metrics.health_gate("passed", Reason.READY.value, seconds)
        else:
            metrics.health_gate("failed", str(failure.reason), seconds)

    # ------------------------------------------------------------------ the transcript
    def render(
        self, version: DeploymentVersion, workload: Obj | None, failure: Failure | None, started: datetime | None, now: datetime
    ) -> bytes:
        moment = [now]
        log = BuildLog(clock=lambda: moment[0])

        def at(when: datetime | None, message: str) -> None:
            moment[0] = when or now
            log.line(message)

        runtime = version.spec.runtime
        at(started, f"version {version.metadata.namespace}/{version.metadata.name} ({version.status.id}): health gate")
        if runtime is not None:
            command = " ".join(runtime.command or []) or "(image default)"
            at(started, f"runtime image {runtime.image}, command {command}, port {runtime.port}")
            at(started, f"ready when GET {runtime.health_check_path} on port {runtime.port} answers 2xx, "
                        f"within {self.config.health_gate_timeout:.0f}s")  # fmt: skip
        if workload is not None:
            name = workload["metadata"]["name"]
            at(started, f"verification workload {name} created")
            for line_time, text in sorted(self._timeline(workload), key=lambda item: item[0] or now):
                at(line_time, text)
        if failure is None:
            took = f" after {(now - started).total_seconds():.1f}s" if started else ""
            at(now, f"passed{took}: the verification workload became available; the version is ready")
        else:
            took = f" after {(now - started).total_seconds():.1f}s" if started else ""
            at(now, f"FAILED {failure.reason}{took}: {failure.message}")
        return log.render()

    def _timeline(self, workload: Obj) -> list[tuple[datetime | None, str]]:
        namespace = workload["metadata"].get("namespace") or ""
        selector = ",".join(f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items())
        lines: list[tuple[datetime | None, str]] = []
        for condition in (workload.get("status") or {}).get("conditions") or []:
            lines.append((parse_time(condition.get("lastTransitionTime")), f"workload {_condition(condition)}"))
        try:
            pods = self.kube.list_pods(namespace, selector)[:MAX_PODS]
        except ApiError as exc:
            return [*lines, (None, f"pods could not be read: {exc}")]
        if not pods:
            lines.append((None, "no pod was created (quota, admission or scheduling: see the events above)"))
        names = [workload["metadata"]["name"], *(p["metadata"]["name"] for p in pods)]
        for pod in pods:
            lines += _pod_lines(pod)
        lines += self._events(namespace, names)
        return lines

    def _events(self, namespace: str, names: list[str]) -> list[tuple[datetime | None, str]]:
        lines: list[tuple[datetime | None, str]] = []
        for name in names:
            try:
                events = self.kube.list_events(namespace, f"involvedObject.name={name}")
            except ApiError:
                continue  # events are a courtesy; the pods' own status is already in
            for event in events[:MAX_EVENTS]:
                when = parse_time(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"))
                involved = event.get("involvedObject") or {}
                count = f" (x{event['count']})" if (event.get("count") or 1) > 1 else ""
                lines.append((
                    when,
                    f"event {involved.get('kind', '?')}/{involved.get('name', '?')} {event.get('type', '')} "
                    f"{event.get('reason', '')}: {event.get('message', '')}{count}",
                ))  # fmt: skip
        return lines


def _condition(condition: Obj) -> str:
    reason = f" {condition['reason']}" if condition.get("reason") else ""
    message = f": {condition['message']}" if condition.get("message") else ""
    return f"{condition.get('type')}={condition.get('status')}{reason}{message}"


def _pod_lines(pod: Obj) -> list[tuple[datetime | None, str]]:
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or "no node"
    lines: list[tuple[datetime | None, str]] = [
        (parse_time(pod["metadata"].get("creationTimestamp")), f"pod {name} created ({status.get('phase', '?')}, {node})")
    ]
    for condition in status.get("conditions") or []:
        lines.append((parse_time(condition.get("lastTransitionTime")), f"pod {name} {_condition(condition)}"))
    for container in status.get("containerStatuses") or []:
        state: dict[str, Any] = container.get("state") or {}
        detail = next(
            (f"{kind} {body.get('reason', '')} {body.get('message', '')}".strip() for kind, body in state.items() if body), "?"
        )
        exit_code = (state.get("terminated") or {}).get("exitCode")
        detail += f" (exit code {exit_code})" if exit_code is not None else ""
        lines.append((None, f"pod {name} container {container.get('name')}: ready={container.get('ready')}, "
                            f"restarts {container.get('restartCount', 0)}, {detail}"))  # fmt: skip
    return lines
