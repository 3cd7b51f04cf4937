"""The plugin on day two, against the real cluster and operator: ``status --watch`` on a
reverted rollout, ``retry``, completion through kubectl itself, a dynamic version's build
log, the light distribution's zipapp, and ``kubectl explain`` of the CRDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from .conftest import REPO, Environment, OperatorProcess
from .helpers import Objects, dynamic_spec, wait_until
from .test_plugin import ok, plugin


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def live_app(objects: Objects, env: Environment, namespace: str, deadline: int = 15) -> None:
    objects.create_deployment("app", kind="dynamic", rollout={"progressDeadlineSeconds": deadline})
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.create_version("app-v2", dynamic_spec("app", image="registry.example/app:2.0"))
    objects.wait_state("app-v1", "ready")
    objects.wait_state("app-v2", "ready")
    ok(plugin(env, namespace, "promote", "app", "app-v1", "--wait", "--timeout", "90"))


def test_status_watch_exits_1_on_a_reverted_rollout_and_retry_brings_it_live(
    env: Environment, api: client.ApiClient, objects: Objects, namespace: str
) -> None:
    live_app(objects, env, namespace)
    healthy = plugin(env, namespace, "status", "app")
    assert healthy.returncode == 0, healthy.stderr
    assert "Healthy  Live: version app-v1 (#1) is live" in healthy.stdout

    # No new pod fits: v2 can never become available, and is reverted after 15 s.
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "full"}, "spec": {"hard": {"pods": "1"}}})
    ok(plugin(env, namespace, "promote", "app", "app-v2"))
    watched = plugin(env, namespace, "status", "app", "--watch", "--timeout", "120")
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    lines = watched.stdout.splitlines()
    assert any("Progressing" in line and "rolling out promote app-v2 (#2)" in line for line in lines), lines
    assert (
        "Degraded     RolloutReverted: the rollout of app-v2 failed and was reverted" in lines[-1]
        or "Degraded     RolloutReverted: rollout of app-v2 did not become available within 15s" in lines[-1]
    ), lines[-1]
    assert "is Degraded: RolloutReverted" in watched.stderr
    assert plugin(env, namespace, "status", "app").returncode == 1  # and it stays so: held
    generation = objects.deployment("app")["metadata"]["generation"]

    # Fixed: retry without touching spec; the rollout is tried again and completes.
    core.delete_namespaced_resource_quota("full", namespace)
    retried = plugin(env, namespace, "retry", "app-v2", "--reason", "quota removed", "--wait", "--timeout", "120", "-o", "json")
    assert retried.returncode == 0, retried.stderr
    body = json.loads(retried.stdout)
    assert body["status"]["liveVersion"] == "app-v2" and body["status"]["lastRetryToken"].startswith("app-v2@")
    assert body["metadata"]["generation"] == generation and body["spec"]["promotedVersion"] == "app-v2"
    last = body["status"]["history"][-1]
    assert (last["version"], last["action"], last["reason"], last["actor"]) == (
        "app-v2",
        "promote",
        "quota removed",
        "miosa-admin",
    )
    assert plugin(env, namespace, "status", "app", "-o", "jsonpath={.status.liveVersion}").stdout == "app-v2"
    again = plugin(env, namespace, "retry", "app-v2")
    assert again.returncode == 1 and "no reverted rollout to retry" in again.stderr


def test_completion_through_kubectl(env: Environment, objects: Objects, namespace: str) -> None:
    objects.create_deployment("site")
    objects.create_deployment("shop")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    kubectl = str(env.bin_dir / "kubectl")

    def complete(*words: str) -> list[str]:
        done = subprocess.run([kubectl, "__complete", "miosa", *words], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env.values, "PATH": path})  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    assert complete("")[:-1] == ["history", "logs", "promote", "publish", "retry", "rollback", "status", "versions"]
    assert complete("")[-1] == ":4"
    assert complete("-n", namespace, "status", "s") == ["shop", "site", ":4"]
    assert complete("-n", namespace, "versions", "list", "site", "--state", "f") == ["failed", ":4"]


def test_a_dynamic_versions_build_log_is_its_health_gate(env: Environment, objects: Objects, namespace: str) -> None:
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app", healthCheckPath="/ready"))
    version = objects.wait_state("app-v1", "ready")
    uri = version["status"]["buildLogUri"]
    assert uri == f"s3://miosa-releases/{namespace}/{version['status']['deploymentId']}/{version['status']['id']}/build.log"
    text = ok(plugin(env, namespace, "logs", "app-v1"))
    assert f"version {namespace}/app-v1 ({version['status']['id']}): health gate" in text
    assert "ready when GET /ready on port 8080 answers 2xx" in text
    assert "verification workload app-v1-verify created" in text
    assert "pod app-v1-verify-" in text and "Ready=True" in text  # the pod, as the kubelet (kwok) reported it
    assert "event Pod/app-v1-verify-" in text and "Scheduled" in text  # the scheduler's event
    assert text.splitlines()[-1].split("  ", 1)[1].startswith("passed after")


def test_the_light_zipapp_lists_versions_on_a_bare_python(
    env: Environment, objects: Objects, namespace: str, tmp_path: Path
) -> None:
    subprocess.run(["bash", str(REPO / "hack" / "build-plugin.sh"), str(tmp_path)], check=True, capture_output=True, timeout=300)
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.wait_state("app-v1", "ready")
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "kubectl-miosa"), "--kubeconfig", env.kubeconfig, "-n", namespace,
         "versions", "list", "app", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (version,) = json.loads(done.stdout)
    assert version["name"] == "app-v1" and version["state"] == "ready" and version["version_number"] == 1


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("mdep.spec", "What should run: the promoted version"),
        ("mdep.status.history.action", "promote (a newer version), rollback (an older one), auto"),
        ("mdep.status.rollout.startedAt", "progressDeadlineSeconds counts from here"),
        ("mdep.status.lastRetryToken", "kubectl miosa retry"),
        ("dver.spec.runtime.env.name", "Variable name (unique within env)"),
        ("dver.status.buildLogUri", "a dynamic version's health gate"),
        ("mret.status", "Written only by the operator"),
    ],
)
def test_kubectl_explain_describes_deep_paths(env: Environment, crds: None, path: str, says: str) -> None:
    def explained() -> str | None:
        done = env.kubectl("explain", path, check=False)
        return done.stdout if done.returncode == 0 else None

    text = wait_until(explained, timeout=60, what=f"kubectl explain {path}")  # the OpenAPI of new CRDs is published lazily
    assert says in " ".join(text.split()), text
