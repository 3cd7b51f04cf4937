"""A dynamic version's build log: the health gate's transcript (controllers/gate_log)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from miosa_operator.api.models import VersionState
from miosa_operator.controllers.common import Retry
from miosa_operator.store import TransientStoreError

from .conftest import NS, TIMESTAMPED, Env, ready_condition


@pytest.fixture(name="env")
def gate_env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def passed() -> float:
    return REGISTRY.get_sample_value("miosa_health_gates_total", {"outcome": "passed", "reason": "Ready"}) or 0.0


def failed() -> float:
    return REGISTRY.get_sample_value("miosa_health_gates_total", {"outcome": "failed", "reason": "HealthCheckFailed"}) or 0.0


def started(env: Env) -> dict:
    env.deployment("api", kind="dynamic")
    env.dynamic_version("api-v1", "api", healthCheckPath="/healthz")
    assert isinstance(env.step("api-v1"), Retry)
    workload = env.kube.peek("apps/v1/deployments", NS, "api-v1-verify")
    assert workload is not None
    return workload


def pod(env: Env, workload: dict, ready: str, message: str) -> None:
    env.kube.add_pod(NS, {
        "metadata": {"name": "api-v1-verify-abc12", "labels": workload["spec"]["selector"]["matchLabels"],
                     "creationTimestamp": "2026-05-14T12:00:01Z"},
        # A pod of the workload runs its containers (the gate checks, a ReplicaSet adopts any match).
        "spec": {"nodeName": "kwok-node-0", "containers": workload["spec"]["template"]["spec"]["containers"]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-05-14T12:00:01Z"},
                           {"type": "Ready", "status": ready, "message": message, "lastTransitionTime": "2026-05-14T12:00:03Z"}],
            "containerStatuses": [{"name": "app", "ready": ready == "True", "restartCount": 2,
                                   "state": {"running": {"startedAt": "2026-05-14T12:00:02Z"}}}],
        },
    })  # fmt: skip
    env.kube.add_event(NS, {
        "involvedObject": {"kind": "Pod", "name": "api-v1-verify-abc12"}, "type": "Warning", "reason": "Unhealthy",
        "message": "Readiness probe failed: HTTP probe failed with statuscode: 503\x1b[31m", "count": 7,
        "lastTimestamp": "2026-05-14T12:00:09Z",
    })  # fmt: skip


def test_a_passed_gate_writes_its_transcript_as_the_build_log(env: Env) -> None:
    before = passed()
    workload = started(env)
    pod(env, workload, "True", "")
    env.clock.advance(12)
    env.kube.mark_available(NS, "api-v1-verify")
    assert env.step("api-v1") == VersionState.READY
    status = env.get("api-v1")["status"]
    text = env.path(status["buildLogUri"]).read_text()
    lines = text.splitlines()
    assert all(TIMESTAMPED.match(line) for line in lines)
    assert f"version {NS}/api-v1 ({status['id']}): health gate" in lines[0]
    assert f"ready when GET /healthz on port 8080 answers 2xx, within {env.config.health_gate_timeout:.0f}s" in text
    assert "verification workload api-v1-verify created" in text
    assert "pod api-v1-verify-abc12 created (Running, kwok-node-0)" in text
    assert "container app: ready=True, restarts 2, running" in text
    # Events in time order, with their own times; a pod's message cannot smuggle escapes.
    assert "2026-05-14T12:00:09.000Z  event Pod/api-v1-verify-abc12 Warning Unhealthy: Readiness probe failed" in text
    assert "(x7)" in text and "\x1b" not in text and "\\x1b[31m" in text
    assert lines[-1].endswith("passed after 12.0s: the verification workload became available; the version is ready")
    assert passed() == before + 1


def test_a_failed_gate_says_why_in_its_build_log(env: Env) -> None:
    before = failed()
    workload = started(env)
    pod(env, workload, "False", "Readiness probe failed: HTTP 503")
    # The deadline counts from the container's start (12:00:02), not the workload's creation.
    env.clock.advance(env.config.health_gate_timeout + 3)
    assert env.step("api-v1") == VersionState.FAILED
    version = env.get("api-v1")
    text = env.path(version["status"]["buildLogUri"]).read_text()
    assert "pod api-v1-verify-abc12 Ready=False: Readiness probe failed: HTTP 503" in text
    assert (
        f"FAILED HealthCheckFailed after {env.config.health_gate_timeout + 3:.1f}s: {ready_condition(version)['message'][:60]}"
        in text
    )
    assert failed() == before + 1


def test_an_invalid_runtime_gets_a_build_log_too(env: Env) -> None:
    env.deployment("api", kind="dynamic")
    env.dynamic_version("api-v1", "api", env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])
    assert env.step("api-v1") == VersionState.FAILED
    text = env.path(env.get("api-v1")["status"]["buildLogUri"]).read_text()
    assert "FAILED InvalidRuntime: runtime.env names are duplicated: A" in text


def test_a_store_fault_keeps_the_gate_open_until_the_log_is_written(env: Env, monkeypatch) -> None:
    workload = started(env)
    pod(env, workload, "True", "")
    env.kube.mark_available(NS, "api-v1-verify")
    gate = env.controller.health_gate
    real = gate.transcript.store.put_bytes_if_absent
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise TransientStoreError("503 Slow Down")
        return real(*args, **kwargs)

    monkeypatch.setattr(gate.transcript.store, "put_bytes_if_absent", flaky)
    wait = env.step("api-v1")
    assert isinstance(wait, Retry) and not wait.planned
    assert env.kube.peek("apps/v1/deployments", NS, "api-v1-verify") is not None  # decided again next time
    assert env.step("api-v1") == VersionState.READY
    assert Path(env.path(env.get("api-v1")["status"]["buildLogUri"])).exists()
