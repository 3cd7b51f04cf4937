"""Operating it: the operator's /metrics and its JSON log lines, against the real flow.

The suite's operator serves metrics on the slot's metrics port and logs JSON lines
(conftest.OPERATOR_ENV); these tests scrape the one and parse the other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess
from .helpers import GROUP, VERSION, Objects, dynamic_spec, sha256, static_spec, tar_gz, wait_until
from .slots import METRICS_PORT

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape() -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def promote(objects: Objects, deployment: str, version: str) -> None:
    objects.custom.patch_namespaced_custom_object(
        GROUP, VERSION, objects.namespace, "deployments", deployment, {"spec": {"promotedVersion": version}}
    )


def wait_live(objects: Objects, deployment: str, version: str) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        status = objects.deployment(deployment).get("status") or {}
        return status if status.get("liveVersion") == version and not status.get("rollout") else None

    return wait_until(live, timeout=90, what=f"{version} live")


def plugin(env: Environment, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "kubectl-miosa"
    return subprocess.run([str(exe), "--kubeconfig", env.kubeconfig, *args], capture_output=True, text=True, timeout=120)


def log_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    """Every line of the session's operator log, parsed (the fixture's start markers aside)."""
    parsed = []
    for number, line in enumerate(operator.log_path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("===== operator start"):
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"operator log line {number} is not JSON: {line[:300]}")
    return parsed


def journaled(operator: OperatorProcess, namespace: str, text: str) -> None:
    """Wait for the journal's line: it is logged right after its counters moved, so a scrape
    from now on includes them (the status the test saw may be a moment ahead of them)."""
    wait_until(
        lambda: any(line.get("namespace") == namespace and text in line["message"] for line in log_lines(operator)),
        timeout=30, what=f"log line {text!r}",
    )  # fmt: skip


def test_a_promote_and_a_rollback_move_their_counters_by_exactly_one(
    env: Environment, objects: Objects, namespace: str, operator: OperatorProcess
) -> None:
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.create_version("app-v2", dynamic_spec("app", image="registry.example/app:2.0"))
    objects.wait_state("app-v1", "ready")
    objects.wait_state("app-v2", "ready")
    promote(objects, "app", "app-v1")
    wait_live(objects, "app", "app-v1")
    journaled(operator, namespace, "promote of app-v1 (#1) complete")

    before = scrape()
    promote(objects, "app", "app-v2")
    wait_live(objects, "app", "app-v2")
    journaled(operator, namespace, "promote of app-v2 (#2) complete")
    after_promote = scrape()
    result = plugin(env, "-n", namespace, "rollback", "app", "--wait", "--timeout", "90")
    assert result.returncode == 0, result.stderr
    journaled(operator, namespace, "rollback of app-v1 (#1) complete")
    after_rollback = scrape()

    promoted = dict(action="promote", outcome="live")
    rolled_back = dict(action="rollback", outcome="live")
    assert moved(before, after_promote, "miosa_rollouts_total", **promoted) == 1
    assert moved(before, after_promote, "miosa_rollout_duration_seconds_count", action="promote") == 1
    assert moved(before, after_promote, "miosa_rollouts_total", **rolled_back) == 0
    assert moved(after_promote, after_rollback, "miosa_rollouts_total", **rolled_back) == 1
    assert moved(after_promote, after_rollback, "miosa_rollout_duration_seconds_count", action="rollback") == 1
    assert moved(after_promote, after_rollback, "miosa_rollouts_total", **promoted) == 0
    assert 0 < moved(after_promote, after_rollback, "miosa_rollout_duration_seconds_sum", action="rollback") < 90
    # The webhook admitted both patches; versions are counted by state and kind.
    assert moved(before, after_rollback, "miosa_webhook_decisions_total", webhook="promotion", decision="allowed") >= 2
    assert value(after_rollback, "miosa_versions", state="ready", kind="dynamic") >= 1
    assert value(after_rollback, "miosa_versions", state="archived", kind="dynamic") >= 1
    assert value(after_rollback, "miosa_health_gates_total", outcome="passed", reason="Ready") >= 2
    assert value(after_rollback, "process_resident_memory_bytes") > 0


def test_json_log_lines_name_the_object_and_never_a_secret(
    env: Environment, objects: Objects, namespace: str, operator: OperatorProcess, operator_kubeconfig: Path
) -> None:
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app"))
    version_id = objects.wait_state("app-v1", "ready")["status"]["id"]
    promote(objects, "app", "app-v1")
    wait_live(objects, "app", "app-v1")

    def ours() -> list[dict[str, Any]]:
        return [line for line in log_lines(operator) if line.get("namespace") == namespace]

    wait_until(lambda: any("complete" in line["message"] for line in ours()), timeout=30, what="rollout end line")
    lines = ours()
    for line in lines:
        assert {"timestamp", "severity", "message", "namespace", "name", "kind"} <= line.keys(), line
    about_version = [line for line in lines if line["name"] == "app-v1"]
    assert about_version and all(line["version_id"] == version_id for line in about_version)
    messages = [line["message"] for line in lines]
    assert f"deploymentversion {namespace}/app-v1 #1 is building (Building: verifying the runtime (health gate))" in messages
    assert any(m.startswith(f"deploymentversion {namespace}/app-v1 #1 is ready") for m in messages)
    assert f"deployment {namespace}/app: promote started: app-v1 (#1) replaces nothing" in messages
    complete = next(line for line in lines if line["name"] == "app" and "complete" in line["message"])
    assert complete["version_id"] == version_id and complete["severity"] == "info"

    # No credential, whatever happened in the session so far: the store's keys and the
    # operator's own ServiceAccount token.
    text = operator.log_path.read_text()
    token = next(l.split("token: ")[1].strip(" '}") for l in operator_kubeconfig.read_text().splitlines() if "token:" in l)
    for secret in (env.values["MIOSA_S3_SECRET_ACCESS_KEY"], env.values["MIOSA_S3_ACCESS_KEY_ID"], token):
        assert secret not in text


def test_collection_is_logged_and_counted(
    env: Environment, objects: Objects, namespace: str, operator: OperatorProcess, s3_prefix: str
) -> None:
    objects.create_deployment("site")
    bundle = tar_gz({"index.html": b"<h1>collect me</h1>" * 100})
    key = f"{s3_prefix}site-v1.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    objects.create_version("site-v1", static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
    version_id = objects.wait_state("site-v1", "ready")["status"]["id"]
    policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetentionPolicy", "metadata": {"name": "default"},
              "spec": {"retainDays": 0, "rollbackWindow": 0, "keepBuildLogs": True}}  # fmt: skip
    objects.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "retentionpolicies", policy)
    # The session's operator sweeps hourly; one with a 2 s interval collects at once.
    operator.extra_env["MIOSA_GC_INTERVAL"] = "2"
    operator.restart()
    try:
        wait_until(
            lambda: (objects.version("site-v1").get("status") or {}).get("artifactsCollectedAt"), timeout=60, what="collection"
        )
        after = wait_until(
            lambda: next((s for s in [scrape()] if value(s, "miosa_collected_versions_total") >= 1), None),
            timeout=20, what="collection counted",
        )  # fmt: skip
    finally:
        operator.extra_env.pop("MIOSA_GC_INTERVAL")
        operator.restart()
    # Counters start again with the new process: the restarted operator collected exactly ours.
    assert value(after, "miosa_collected_versions_total") == 1
    assert value(after, "miosa_collected_bytes_total") > 0
    assert value(after, "miosa_collector_runs_total", outcome="success") >= 1
    assert value(after, "miosa_collector_last_success_timestamp_seconds") > 0
    collected = [
        line for line in log_lines(operator)
        if (line.get("namespace"), line.get("name")) == (namespace, "site-v1") and "artifacts collected" in line["message"]
    ]  # fmt: skip
    assert len(collected) == 1 and collected[0]["version_id"] == version_id


def test_settled_versions_are_counted_after_a_restart(objects: Objects, operator: OperatorProcess, api: client.ApiClient) -> None:
    """The operator watches versions in flight only; a ready version leaves its watch, and a
    restarted operator counts the settled ones from a paged listing (observability.census).

    Compared with what the API server holds after the restart, not with the count before it:
    earlier tests' namespaces may be going away meanwhile (a restart forgets their versions)."""
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.wait_state("app-v1", "ready")
    wait_until(
        lambda: value(scrape(), "miosa_versions", state="ready", kind="dynamic") >= 1,
        timeout=30,
        what="the ready version counted",
    )
    operator.restart()
    operator.wait_ready()
    custom = client.CustomObjectsApi(api)

    def ready_dynamic_in_the_cluster() -> int:
        items = custom.list_cluster_custom_object(GROUP, VERSION, "deploymentversions")["items"]
        return sum(1 for v in items if (v.get("status") or {}).get("state") == "ready" and v["spec"]["kind"] == "dynamic")

    wait_until(
        lambda: value(scrape(), "miosa_versions", state="ready", kind="dynamic") >= max(1, ready_dynamic_in_the_cluster()),
        timeout=60,
        what="every ready dynamic version counted again after the restart",
    )
    assert "settled versions counted" in operator.log_path.read_text()
