"""``helm upgrade`` from the previous chart over live objects (docs/upgrades.md).

The previous chart is taken from git (``PREVIOUS_CHART``, the chart as released before this
one), installed, and upgraded to this checkout's chart the way the README says: new CRDs
applied first with server-side apply (Helm never changes CRDs), then ``helm upgrade``.
Versions, releases in the store and the live workloads are created by the suite's operator
before, and must come through unchanged and still work after.

The release's own operator pod runs on a kwok node: it is scheduled and reported Ready
but runs nothing, so the suite's operator stays the only one acting.  The chart is one per
cluster, and this cluster already has the suite's: the release takes ownership of the user
ClusterRoles (same names, same rules; the suite's copies are applied again afterwards), and a
post-renderer leaves out the cluster-wide admission objects (webhook configuration and
admission policies), which would otherwise send every promotion of the suite to the
release's operator that runs nothing.  Those are covered by the admission e2e tests.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .conftest import RELEASES_BUCKET, REPO, Environment, OperatorProcess, create_namespace
from .helpers import Objects, dynamic_spec, wait_until
from .test_packaging import helm
from .test_promotion import promote, static_versions, wait_live

PREVIOUS_CHART = "e83feed"  # charts/miosa-operator as released before metrics, retry and build logs
RELEASE = "upgrade-test"


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


@pytest.fixture
def release_namespace(env: Environment, api: client.ApiClient) -> Iterator[str]:
    name = f"e2e-upgrade-{uuid.uuid4().hex[:5]}"
    create_namespace(api, name)
    try:
        yield name
    finally:
        helm(env, "uninstall", RELEASE, "-n", name, "--wait", "--timeout", "60s", check=False)
        # The release owned the user ClusterRoles: give the suite its copies back.
        for manifest in ("serviceaccount.yaml", "rbac.yaml"):
            env.kubectl("apply", "-f", str(REPO / "manifests" / "operator" / manifest))
        client.CoreV1Api(api).delete_namespace(name)


CLUSTER_ADMISSION = (
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
)  # fmt: skip


def without_cluster_admission(directory: Path) -> Path:
    """A helm post-renderer that drops the chart's cluster-wide admission objects."""
    script = directory / "post-render"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, yaml\n"
        f"drop = {CLUSTER_ADMISSION!r}\n"
        "docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d.get('kind') not in drop]\n"
        "yaml.safe_dump_all(docs, sys.stdout)\n"
    )
    script.chmod(0o755)
    return script


def previous_chart(directory: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_CHART, "charts/miosa-operator"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "charts" / "miosa-operator"


def snapshot(env: Environment, api: client.ApiClient, namespace: str) -> dict[str, Any]:
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    versions = custom.list_namespaced_custom_object("deploy.miosa.io", "v1alpha1", namespace, "deploymentversions")["items"]
    deployments = custom.list_namespaced_custom_object("deploy.miosa.io", "v1alpha1", namespace, "deployments")["items"]
    workloads = apps.list_namespaced_deployment(namespace).items
    releases = env.s3().list_objects_v2(Bucket=RELEASES_BUCKET, Prefix=f"{namespace}/").get("Contents") or []
    return {
        "versions": {v["metadata"]["name"]: (v["metadata"]["uid"], v["spec"], v["status"]) for v in versions},
        "deployments": {d["metadata"]["name"]: (d["metadata"]["uid"], d["spec"], d["status"]) for d in deployments},
        "workloads": {
            w.metadata.name: (w.metadata.uid, w.metadata.generation, w.spec.template.metadata.annotations) for w in workloads
        },
        "releases": {o["Key"]: o["ETag"] for o in releases},
    }


def test_helm_upgrade_from_the_previous_chart_keeps_versions_releases_and_live_workloads(
    env: Environment, api: client.ApiClient, objects: Objects, namespace: str, s3_prefix: str,
    release_namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    objects.create_deployment("site")
    site_v1, site_v2 = static_versions(env, objects, s3_prefix, "site", 2)
    promote(objects, "site", site_v1)
    objects.create_deployment("app", kind="dynamic")
    objects.create_version("app-v1", dynamic_spec("app"))
    objects.wait_state("app-v1", "ready")
    promote(objects, "app", "app-v1")
    wait_live(objects, "site", site_v1)
    wait_live(objects, "app", "app-v1")
    before = snapshot(env, api, namespace)
    assert len(before["releases"]) >= 4 and len(before["workloads"]) == 2  # 2 releases + 2 build logs; site and app

    old = previous_chart(tmp_path)
    assert yaml.safe_load((old / "Chart.yaml").read_text())["version"] != yaml.safe_load(
        (REPO / "charts" / "miosa-operator" / "Chart.yaml").read_text())["version"]  # fmt: skip
    post_render = str(without_cluster_admission(tmp_path))
    helm(env, "install", RELEASE, str(old), "-n", release_namespace, "--take-ownership", "--post-renderer", post_render)
    # The README's upgrade: CRDs first (server-side apply), then the chart.
    env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "miosa-operator" / "crds"))
    env.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    upgraded = helm(env, "upgrade", RELEASE, str(REPO / "charts" / "miosa-operator"), "-n", release_namespace,
                    "--take-ownership", "--reset-then-reuse-values", "--post-renderer", post_render)  # fmt: skip
    assert "has been upgraded" in upgraded.stdout
    status = yaml.safe_load(helm(env, "status", RELEASE, "-n", release_namespace, "-o", "yaml").stdout)
    assert (status["info"]["status"], status["version"]) == ("deployed", 2)
    operator_deployment = client.AppsV1Api(api).read_namespaced_deployment(f"{RELEASE}-miosa-operator", release_namespace)
    container_env = {e.name: e.value for e in operator_deployment.spec.template.spec.containers[0].env}
    assert container_env["MIOSA_METRICS_PORT"] == "8082"  # the new chart's settings are in place

    # The CRDs still store v1alpha1, and every object validates against the new schema.
    for crd in ("deploymentversions", "deployments"):
        stored = env.kubectl("get", "crd", f"{crd}.deploy.miosa.io", "-o", "jsonpath={.status.storedVersions}").stdout
        assert stored == '["v1alpha1"]'
    listed = env.kubectl("-n", namespace, "get", "dver,mdep", "-o", "yaml").stdout
    replaced = env.kubectl("replace", "--dry-run=server", "-f", "-", input=listed, check=False)
    assert replaced.returncode == 0, replaced.stderr

    after = snapshot(env, api, namespace)
    assert after == before  # every version, status, release object and live workload, unchanged

    # ... and the objects keep working: a rollback and a promotion after the upgrade.
    promote(objects, "site", site_v2)
    wait_live(objects, "site", site_v2)
    promote(objects, "site", site_v1)
    body = wait_live(objects, "site", site_v1)
    assert [h["action"] for h in body["status"]["history"]][-3:] == ["promote", "promote", "rollback"]
    wait_until(lambda: objects.version(site_v2)["status"]["state"] == "archived", timeout=30, what="v2 archived")
