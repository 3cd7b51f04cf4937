"""The ``kubectl`` binary, as a tenant's CI uses it: apply (client- and server-side) of a
multi-document file, ``kubectl wait``, ``kubectl patch`` rollback, ``kubectl apply --prune``
with an ApplySet, and re-applying the same manifests changes nothing.

Every command runs with a tenant's ServiceAccount token (the ``tenants`` fixture): only what
the write role (or, for the ApplySet's parent Secret, ``edit``) grants.  The commands are
the ones docs/gitops.md shows.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .conftest import OperatorProcess, Tenant
from .gitops import Repository, deployment_manifest, documents, kubectl, upload_bundle, version_manifest
from .helpers import Objects, condition, wait_until

WAIT = "--timeout=180s"


@pytest.fixture
def tenant(tenants: Any, operator: OperatorProcess) -> Tenant:
    return tenants("ci")


def live_version(tenant: Tenant, deployment: str = "site") -> str:
    return kubectl(tenant.kubeconfig, "get", "mdep", deployment, "-o", "jsonpath={.status.liveVersion}").stdout


def snapshot(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """resourceVersion of every object of ours and every event in the namespace."""
    objects = Objects(api, namespace)
    versions = {f"dver/{v['metadata']['name']}": v["metadata"]["resourceVersion"] for v in objects.versions()}
    deployments = objects.custom.list_namespaced_custom_object("deploy.miosa.io", "v1alpha1", namespace, "deployments")
    state = {f"mdep/{d['metadata']['name']}": d["metadata"]["resourceVersion"] for d in deployments["items"]}
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return {**versions, **state, **{f"event/{e.metadata.name}": e.metadata.resource_version for e in events}}


def settled(api: client.ApiClient, namespace: str, quiet: float = 4) -> dict[str, str]:
    """The namespace's snapshot once the operator has stopped writing (``quiet`` seconds)."""
    previous: dict[str, Any] = {}

    def unchanged() -> dict[str, str] | None:
        nonlocal previous
        current = snapshot(api, namespace)
        same, previous = current == previous, current
        return current if same else None

    return wait_until(unchanged, timeout=60, interval=quiet, what="the operator to settle")


def test_apply_a_multi_document_file_wait_and_roll_back_with_patch(
    env: Any, api: client.ApiClient, tenant: Tenant, tmp_path: Path
) -> None:
    ns, kubeconfig = tenant.namespace, tenant.kubeconfig
    v1, v2 = upload_bundle(env, ns, "site-v1"), upload_bundle(env, ns, "site-v2")
    site = tmp_path / "site.yaml"
    # The Deployment first: its promotedVersion names a version that does not exist yet.
    site.write_text(documents(deployment_manifest("site", "site-v1"), version_manifest("site-v1", "site", v1.uri, v1.sha256)))
    out = kubectl(kubeconfig, "apply", "-f", str(site)).stdout
    assert "deployment.deploy.miosa.io/site created" in out
    assert "deploymentversion.deploy.miosa.io/site-v1 created" in out
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "dver/site-v1", "mdep/site", WAIT)
    assert live_version(tenant) == "site-v1"

    # One change adds v2 and promotes it.
    site.write_text(
        documents(
            deployment_manifest("site", "site-v2"),
            version_manifest("site-v1", "site", v1.uri, v1.sha256),
            version_manifest("site-v2", "site", v2.uri, v2.sha256),
        )
    )
    out = kubectl(kubeconfig, "apply", "-f", str(site)).stdout
    assert "deployment.deploy.miosa.io/site configured" in out and "site-v2 created" in out
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "dver/site-v2", "mdep/site", WAIT)
    assert live_version(tenant) == "site-v2"

    # Re-applying the same file changes nothing: no write, no new resourceVersion, no event.
    before = settled(api, ns)
    out = kubectl(kubeconfig, "apply", "-f", str(site)).stdout
    assert out.count("unchanged") == 3, out
    time.sleep(3)
    assert snapshot(api, ns) == before

    # Roll back with kubectl patch; kubectl wait honours observedGeneration, so it waits for
    # the rollback, not for the Ready condition of the version that was live.
    kubectl(kubeconfig, "patch", "mdep", "site", "--type=merge", "-p", '{"spec":{"promotedVersion":"site-v1"}}')
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "mdep/site", WAIT)
    assert live_version(tenant) == "site-v1"
    deployment = json.loads(kubectl(kubeconfig, "get", "mdep", "site", "-o", "json").stdout)
    last = deployment["status"]["history"][-1]
    assert (last["action"], last["version"], last["actor"]) == ("rollback", "site-v1", f"system:serviceaccount:{ns}:ci")
    states = kubectl(kubeconfig, "get", "dver", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.state} {end}").stdout
    assert states.split() == ["site-v1=ready", "site-v2=archived"]


def test_server_side_apply_as_a_tenant_and_reapply_changes_nothing(
    env: Any, api: client.ApiClient, tenant: Tenant, tmp_path: Path
) -> None:
    ns, kubeconfig = tenant.namespace, tenant.kubeconfig
    v1 = upload_bundle(env, ns, "site-v1")
    site = tmp_path / "site.yaml"
    site.write_text(documents(deployment_manifest("site", "site-v1"), version_manifest("site-v1", "site", v1.uri, v1.sha256)))
    out = kubectl(kubeconfig, "apply", "--server-side", "-f", str(site)).stdout
    assert out.count("serverside-applied") == 2, out
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "dver/site-v1", "mdep/site", WAIT)
    assert live_version(tenant) == "site-v1"

    before = settled(api, ns)
    for _ in range(2):
        out = kubectl(kubeconfig, "apply", "--server-side", "-f", str(site)).stdout
        assert out.count("serverside-applied") == 2, out
    time.sleep(3)
    assert snapshot(api, ns) == before

    # The operator owns only status and its own labels: kubectl keeps every field it applied.
    version = json.loads(kubectl(kubeconfig, "get", "dver", "site-v1", "-o", "json", "--show-managed-fields").stdout)
    managers = {(m["manager"], m["operation"], m.get("subresource", "")) for m in version["metadata"]["managedFields"]}
    assert ("kubectl", "Apply", "") in managers
    operator_spec = [m for m in version["metadata"]["managedFields"] if m["manager"] != "kubectl" and not m.get("subresource")]
    assert all("f:spec" not in m.get("fieldsV1", {}) for m in operator_spec), operator_spec


def test_apply_prune_with_an_applyset_keeps_version_records(
    env: Any, api: client.ApiClient, tenants: Any, operator: OperatorProcess, tmp_path: Path
) -> None:
    """Versions are applied without pruning (append-only records); the rest of the repository
    is an ApplySet whose members kubectl prunes when their manifests go."""
    tenant = tenants("ci", role="edit")  # the ApplySet's parent is a Secret in the namespace
    ns, kubeconfig = tenant.namespace, tenant.kubeconfig
    repo = Repository(tmp_path / "repo", env, ns)
    repo.add_version("site-v1", "site")
    repo.add_version("site-v2", "site")
    repo.set_deployment("site", "site-v2")
    repo.set_deployment("blog", None)
    applyset = {"KUBECTL_APPLYSET": "true"}

    def sync() -> subprocess.CompletedProcess[str]:
        kubectl(kubeconfig, "apply", "-R", "-f", str(repo.root / "versions"))
        return kubectl(
            kubeconfig, "apply", "-n", ns, "--prune", "--applyset=site", "-R", "-f", str(repo.root / "deployments"), env=applyset
        )

    sync()
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "mdep/site", "mdep/blog", "dver/site-v1", "dver/site-v2", WAIT)
    assert live_version(tenant) == "site-v2"

    # A commit drops the blog and the manifest of an old version.
    repo.remove("deployments/blog.yaml")
    repo.remove("versions/site-v1.yaml")
    out = sync().stdout
    assert "deployment.deploy.miosa.io/blog pruned" in out, out
    assert kubectl(kubeconfig, "get", "mdep", "blog", check=False).returncode != 0
    objects = Objects(api, ns)
    assert {v["metadata"]["name"] for v in objects.versions()} == {"site-v1", "site-v2"}
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "mdep/site", WAIT)

    # Versions put into the ApplySet by mistake: the prune of a dropped version is refused
    # (tenants cannot delete the audit record) and reported; the version and the site stay.
    naive = kubectl(kubeconfig, "apply", "-n", ns, "--prune", "--applyset=everything", "-R", "-f", str(repo.root), env=applyset)
    assert "site-v2" in naive.stdout
    repo.remove("versions/site-v2.yaml")
    repo.add_version("site-v3", "site")
    refused = kubectl(
        kubeconfig, "apply", "-n", ns, "--prune", "--applyset=everything", "-R", "-f", str(repo.root), env=applyset, check=False
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused
    assert "site-v2" in refused.stderr
    assert objects.version("site-v2")["status"]["state"] in ("ready", "archived")
    assert condition(objects.deployment("site"), "Ready")["status"] == "True"
