"""End to end on the real node: containers really run (kubelet, containerd, runc, CNI).

On kwok a pod is Ready once scheduled, so these paths were never exercised before: the
health gate decided by a real readiness probe, ``miosa-operator fetch`` as an init container
verifying the release before ``miosa-operator serve`` answers HTTP, a tampered release that
is refused and never served, and the operator itself running from its image under the Helm
chart.  Images are built and imported by hack/build-images.sh (no registry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .conftest import REPO, UPLOADS_BUCKET, WEBHOOK_URL, Admission, Environment, OperatorProcess, install_admission
from .helpers import Objects, condition, dynamic_spec, sha256, static_spec, tar_gz, wait_until
from .realnode import (
    OPERATOR_IMAGE,
    TESTAPP_IMAGE,
    RealNode,
    kubelet_events,
    promote,
    ready_endpoints,
    real_node,
    served,
    steer_to_real_node,
    wait_live,
    wait_node_ready,
)
from .slots import ENV_DIR, environment_variables

pytestmark = pytest.mark.realnode


@pytest.fixture(scope="module")
def node(env: Environment, api: client.ApiClient) -> RealNode:
    found = real_node(env)
    wait_node_ready(api, found)
    return found


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, node: RealNode) -> Objects:
    steer_to_real_node(api, namespace, node)
    return Objects(api, namespace)


def app_runtime(**env: str) -> dict[str, Any]:
    return {
        "image": TESTAPP_IMAGE,
        "port": 8080,
        "healthCheckPath": "/healthz",
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }


def static_versions(env: Environment, objects: Objects, prefix: str, deployment: str, count: int) -> list[str]:
    names = []
    for i in range(1, count + 1):
        bundle = tar_gz({"index.html": f"<h1>{deployment} v{i}</h1>\n".encode()})
        key = f"{prefix}{deployment}-v{i}.tar.gz"
        env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
        names.append(f"{deployment}-v{i}")
        objects.create_version(names[-1], static_spec(deployment, f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
    for name in names:
        assert objects.wait_state(name, "ready", "failed", timeout=120)["status"]["state"] == "ready"
    return names


def page(deployment: str, number: int) -> bytes:
    return f"<h1>{deployment} v{number}</h1>\n".encode()


def site_pods(api: client.ApiClient, namespace: str, deployment: str) -> list[client.V1Pod]:
    return client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"deploy.miosa.io/app={deployment}").items


# ----------------------------------------------------------------------------- dynamic


def test_health_gate_is_decided_by_a_real_readiness_probe(
    api: client.ApiClient, operator: OperatorProcess, objects: Objects, namespace: str, node: RealNode
) -> None:
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-healthy", dynamic_spec("app", **app_runtime(HEALTH_STATUS="200")))
    objects.create_version("app-500", dynamic_spec("app", **app_runtime(HEALTH_STATUS="500")))
    objects.create_version("app-silent", dynamic_spec("app", **app_runtime(LISTEN="never")))

    healthy = objects.wait_state("app-healthy", "ready", "failed", timeout=120)
    assert healthy["status"]["state"] == "ready", condition(healthy, "Ready")
    started = kubelet_events(api, namespace, node, "app-healthy-")
    assert any(e.reason == "Started" for e in started), [(e.reason, e.message) for e in started]

    for name, probe_failure in (("app-500", "statuscode: 500"), ("app-silent", "connection refused")):
        failed = objects.wait_state(name, "failed", "ready", timeout=120)
        ready = condition(failed, "Ready")
        assert failed["status"]["state"] == "failed", ready
        assert ready["reason"] == "HealthCheckFailed", ready
        # The kubelet of the real node ran the probe and said why it failed.
        unhealthy = [e.message for e in kubelet_events(api, namespace, node, f"{name}-") if e.reason == "Unhealthy"]
        assert any("Readiness probe failed" in m and probe_failure in m for m in unhealthy), unhealthy


# ----------------------------------------------------------------------------- static


def test_static_site_is_fetched_verified_served_and_rolled_back(
    env: Environment,
    api: client.ApiClient,
    operator: OperatorProcess,
    objects: Objects,
    namespace: str,
    node: RealNode,
    s3_prefix: str,
) -> None:
    objects.create_deployment("site", replicas=1, rollout={"progressDeadlineSeconds": 45})
    v1, v2, v3 = static_versions(env, objects, s3_prefix, "site", 3)

    promote(objects, "site", v1)
    wait_live(objects, "site", v1)
    (pod,) = [p for p in site_pods(api, namespace, "site") if p.status.phase == "Running"]
    assert pod.spec.node_name == node.name
    (fetch,) = pod.status.init_container_statuses
    assert fetch.state.terminated.exit_code == 0
    fetched = env.kubectl("-n", namespace, "logs", pod.metadata.name, "-c", "fetch").stdout
    assert objects.version(v1)["status"]["artifactSha256"] in fetched, fetched
    assert served(api, namespace, "site") == {page("site", 1)}

    promote(objects, "site", v2)
    wait_live(objects, "site", v2)
    wait_until(lambda: served(api, namespace, "site") == {page("site", 2)}, timeout=30, what="v2 served")

    promote(objects, "site", v1)  # rollback
    dep = wait_live(objects, "site", v1)
    assert dep["status"]["history"][-1]["action"] == "rollback"
    wait_until(lambda: served(api, namespace, "site") == {page("site", 1)}, timeout=30, what="v1 served again")

    # Someone with write access to the store swaps v3's release after it was verified.
    release = objects.version(v3)["status"]["artifactUri"]
    bucket, key = release.removeprefix("s3://").split("/", 1)
    data = env.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    middle = len(data) // 2
    env.s3().put_object(Bucket=bucket, Key=key, Body=data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
    v3_id = objects.version(v3)["status"]["id"]
    promote(objects, "site", v3)

    def refused() -> tuple[client.V1Pod, str] | None:
        for candidate in site_pods(api, namespace, "site"):
            if (candidate.metadata.annotations or {}).get("deploy.miosa.io/version-id") != v3_id:
                continue
            state = (candidate.status.init_container_statuses or [None])[0]
            done = state and (state.state.terminated or state.last_state.terminated)
            if done and done.exit_code != 0:
                return candidate, done.message or ""
        return None

    # The reason is read from the pod's status, where the kubelet keeps it: the fetch
    # restarts, and the log of a restarted container may already be collected.
    bad, message = wait_until(refused, timeout=90, what="the fetch of the tampered release refused")
    assert "refused: ChecksumMismatch" in message, message
    server = [s for s in (bad.status.container_statuses or []) if s.name == "server"]
    assert all(s.state.running is None and not s.ready for s in server)
    assert bad.status.pod_ip not in {e.split(":")[0] for e in ready_endpoints(api, namespace, "site")}
    assert served(api, namespace, "site") == {page("site", 1)}, "the live version keeps serving"

    def reverted() -> dict[str, Any] | None:
        body = objects.deployment("site")
        failed = condition(body, "RolloutFailed")
        return body if failed and failed["status"] == "True" else None

    dep = wait_until(reverted, timeout=120, what="the rollout of the tampered release reverted")
    assert dep["status"]["liveVersion"] == v1
    wait_until(lambda: served(api, namespace, "site") == {page("site", 1)}, timeout=30, what="v1 served after revert")


# ----------------------------------------------------------------------------- in cluster

RELEASE, RELEASE_NAMESPACE = "incluster", "miosa-incluster"
FULLNAME = f"{RELEASE}-miosa-operator"


def helm(env: Environment, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(env.bin_dir / "helm"), "--kubeconfig", env.kubeconfig, *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
    )


def local_admission_objects(admission: Admission) -> str:
    """The admission objects the suite installed for its own operator (conftest.install_admission)."""
    return subprocess.run(
        [sys.executable, str(REPO / "hack" / "local-admission.py"), "--url", WEBHOOK_URL, "--ca", str(admission.cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture
def in_cluster_operator(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, admission: Admission, node: RealNode
) -> Iterator[None]:
    """The chart installed with the image built by hack/build-images.sh, the operator pod on
    the real node.  The suite's own operator and its admission objects (whose policies name
    its ServiceAccount) are out of the way meanwhile: two operators would both act."""
    operator.stop()
    env.kubectl("delete", "--ignore-not-found", "-f", "-", input=local_admission_objects(admission))
    # The API server presents its admission client certificate (hack/env.sh); the operator
    # requires it, signed by this CA, as a cluster configured per the README would.
    env.kubectl("create", "namespace", RELEASE_NAMESPACE)
    ca = Path(env.kubeconfig).parent / "pki" / "admission-ca.crt"
    env.kubectl("-n", RELEASE_NAMESPACE, "create", "configmap", "apiserver-admission-ca", f"--from-file=ca.crt={ca}")
    toleration = {"key": node.label, "operator": "Exists", "effect": "NoSchedule"}
    values = {
        "image": {"pullPolicy": "Never"},
        "store": {
            "releasesUri": "s3://miosa-releases",
            "s3": {
                "endpoint": env.values["MIOSA_S3_ENDPOINT"],
                "accessKeyId": env.values["MIOSA_S3_ACCESS_KEY_ID"],
                "secretAccessKey": env.values["MIOSA_S3_SECRET_ACCESS_KEY"],
            },
        },
        "healthGate": {"timeout": 20},
        "extraEnv": [{"name": "MIOSA_POLL_INTERVAL", "value": "1"}],
        "nodeSelector": {node.label: "true"},
        "tolerations": [toleration],
        "webhook": {"clientAuth": {"caConfigMap": "apiserver-admission-ca", "names": ["kube-apiserver-admission"]}},
    }
    try:
        # The user-facing ClusterRoles already exist (the suite applied manifests/): adopt them.
        helm(
            env,
            "install",
            RELEASE,
            str(REPO / "charts" / "miosa-operator"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--take-ownership",
            "--wait",
            "--timeout",
            "240s",
            *set_json(values),
        )
        yield
    finally:
        logs = env.kubectl("-n", RELEASE_NAMESPACE, "logs", f"deployment/{FULLNAME}", "--tail=80", check=False).stdout
        print("in-cluster operator log (tail):\n" + logs)
        helm(env, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)
        env.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--timeout=120s", check=False)
        # The suite's operator identity and the user roles, which the uninstall removed.
        env.kubectl("apply", "-f", str(REPO / "manifests" / "operator" / "rbac.yaml"))
        install_admission(env, admission.cert)
        operator.start()
        operator.wait_ready()


def set_json(values: dict[str, Any]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def test_operator_runs_in_cluster_from_its_image_under_the_chart(
    env: Environment,
    api: client.ApiClient,
    in_cluster_operator: None,
    operator: OperatorProcess,
    objects: Objects,
    namespace: str,
    node: RealNode,
) -> None:
    """The promotion flow through the in-cluster operator: its health gate on the real node,
    its admission webhook (called by the API server on the pod's address), its rollout.

    A dynamic app, because static pods fetch their release from the operator's artifact
    Service by its DNS name, and pods on the real node have neither cluster DNS nor Service
    routing (no kube-proxy: README "The real node"); the static flow runs against the
    suite's operator in test_static_site_is_fetched_verified_served_and_rolled_back."""
    assert operator.proc is not None and operator.proc.poll() is not None, "only the in-cluster operator runs"
    (pod,) = (
        client.CoreV1Api(api).list_namespaced_pod(RELEASE_NAMESPACE, label_selector="app.kubernetes.io/name=miosa-operator").items
    )
    assert pod.spec.node_name == node.name
    assert pod.spec.service_account_name == FULLNAME
    assert pod.spec.containers[0].image == OPERATOR_IMAGE
    assert all(s.ready for s in pod.status.container_statuses)

    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app", **app_runtime(MESSAGE="v1")))
    objects.create_version("app-v2", dynamic_spec("app", **app_runtime(MESSAGE="v2")))
    objects.create_version("app-bad", dynamic_spec("app", **app_runtime(HEALTH_STATUS="500")))
    for name, state in (("app-v1", "ready"), ("app-v2", "ready"), ("app-bad", "failed")):
        assert objects.wait_state(name, "ready", "failed", timeout=120)["status"]["state"] == state, name

    # The admission webhook is served from the pod: a failed version can never go live.
    refused = env.kubectl(
        "-n", namespace, "patch", "mdep", "app", "--type=merge", "-p", '{"spec":{"promotedVersion":"app-bad"}}', check=False
    )
    assert refused.returncode != 0 and "app-bad" in refused.stderr and "failed" in refused.stderr, refused.stderr

    for version, message in (("app-v1", b"v1\n"), ("app-v2", b"v2\n"), ("app-v1", b"v1\n")):
        promote(objects, "app", version)
        dep = wait_live(objects, "app", version)
        assert (
            dep["status"]["history"][-1]["actor"] == "miosa-admin"
        )  # recorded at admission, as the in-cluster chart configures it
        wait_until(lambda m=message: served(api, namespace, "app") == {m}, timeout=60, what=f"{version} served")
    assert [h["action"] for h in dep["status"]["history"]] == ["promote", "promote", "rollback"]
    logs = env.kubectl("-n", RELEASE_NAMESPACE, "logs", pod.metadata.name).stdout
    assert '"POST /promotion' in logs and "kube-apiserver-admission" in logs, "the API server called the pod's webhook"


# ----------------------------------------------------------------------------- stop, start

HOST_PATHS = ("/run/containerd", "/run/netns", "/var/lib/cni", "/var/log/containers", "/var/log/pods", "/opt/containerd")
KERNEL_SETTINGS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward")


def host_state(port: str) -> dict[str, Any]:
    """What the node could leave on the host, named after this environment (or host-wide)."""
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/miosa-{port}"))
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(ENV_DIR) in line]
    return {
        "bridge": f"mio{port}:" in links,
        "nft table": f"miosa_{port}" in tables,
        "cgroups": cgroups,
        "mounts": mounts,
        "host paths": [p for p in HOST_PATHS if Path(p).exists()],
        "kernel": {k: Path("/proc/sys", k).read_text().strip() for k in KERNEL_SETTINGS},
    }


def node_processes() -> list[str]:
    node_dir = f"{ENV_DIR}/node/"
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and node_dir in cmdline:
            found.append(cmdline)
    return found


def node_script(env: Environment, command: str) -> None:
    variables = {**os.environ, **environment_variables()}
    subprocess.run(["bash", str(REPO / "hack" / "node.sh"), command], env=variables, check=True, timeout=600)


def test_node_stops_without_leftovers_and_starts_again(
    env: Environment, api: client.ApiClient, objects: Objects, namespace: str, node: RealNode
) -> None:
    port = environment_variables()["MIOSA_APISERVER_PORT"]
    before = host_state(port)
    assert before["bridge"] and before["nft table"] and before["cgroups"]
    assert before["mounts"] == [], "the node's mounts live in its own mount namespace"
    pod = {
        "metadata": {"name": "app"},
        "spec": {  # the namespace enforces Pod Security "restricted"
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "app",
                    "image": TESTAPP_IMAGE,
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod)
    wait_until(
        lambda: (client.CoreV1Api(api).read_namespaced_pod("app", namespace).status.container_statuses or [None])[0],
        timeout=60,
        what="the pod's container reported",
    )
    wait_until(
        lambda: client.CoreV1Api(api).read_namespaced_pod("app", namespace).status.container_statuses[0].ready,
        timeout=60,
        what="the pod ready",
    )
    container_pids = sorted({pid for cg in before["cgroups"] for pid in cgroup_pids(Path(cg))})
    assert container_pids, "the pod's processes run under the environment's cgroup"

    node_script(env, "down")
    after = host_state(port)
    assert (after["bridge"], after["nft table"], after["cgroups"], after["mounts"]) == (False, False, [], [])
    assert after["host paths"] == before["host paths"] and after["kernel"] == before["kernel"]
    assert node_processes() == []
    assert not [pid for pid in container_pids if Path(f"/proc/{pid}").exists()]

    node_script(env, "up")
    wait_node_ready(api, node)
    assert host_state(port)["kernel"] == before["kernel"]


def cgroup_pids(root: Path) -> set[int]:
    return {int(pid) for procs in root.rglob("cgroup.procs") for pid in procs.read_text().split()}
