"""Flux syncs a tenant's repository from a Bucket: a commit that adds v2 and promotes it goes
live with the Kustomization Ready, reverting the commit rolls back, a failed version makes
the Kustomization report the failure (integrations/flux health checks), and a version whose
manifest leaves the repository stays (the audit record).  docs/gitops.md shows the same
objects and steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from .conftest import OperatorProcess
from .flux import Flux, flux_controllers  # noqa: F401  (the `flux` fixture)
from .gitops import FLUX_PRUNE_DISABLED, Repository
from .helpers import Objects, condition, wait_until
from .test_plugin import ok, plugin


def test_flux_promotes_rolls_back_and_reports_a_failed_version(
    env: Any, api: client.ApiClient, tenants: Any, operator: OperatorProcess, flux: Flux, tmp_path: Path
) -> None:
    tenant = tenants("flux")
    ns = tenant.namespace
    objects = Objects(api, ns)
    repo = Repository(tmp_path / "repo", env, ns, version_annotations=FLUX_PRUNE_DISABLED)

    # Commit 1: the site and its first version.
    repo.add_version("site-v1", "site")
    repo.set_deployment("site", "site-v1")
    flux.publish(repo)
    flux.set_up_tenant(ns, "ci")
    first = flux.artifact_revision(ns, None)
    flux.wait_applied(ns, first, ready="True")
    assert objects.deployment("site")["status"]["liveVersion"] == "site-v1"

    # Commit 2 adds v2 and promotes it in one go: Ready only once v2 is live.
    repo.add_version("site-v2", "site")
    repo.set_deployment("site", "site-v2")
    flux.publish(repo)
    flux.reconcile(ns)
    second = flux.artifact_revision(ns, first)
    flux.wait_applied(ns, second, ready="True")
    deployment = objects.deployment("site")
    assert deployment["status"]["liveVersion"] == "site-v2"
    assert condition(deployment, "Ready")["status"] == "True"
    assert deployment["status"]["history"][-1]["actor"] == f"system:serviceaccount:{ns}:ci"

    # Reverting commit 2 rolls back; v2's manifest is gone, its record stays.
    repo.remove("versions/site-v2.yaml")
    repo.set_deployment("site", "site-v1")
    flux.publish(repo)
    flux.reconcile(ns)
    third = flux.artifact_revision(ns, second)
    flux.wait_applied(ns, third, ready="True")
    assert objects.deployment("site")["status"]["liveVersion"] == "site-v1"
    assert objects.version("site-v2")["status"]["state"] == "archived"
    inventory = {e["id"] for e in flux.kustomization(ns)["status"]["inventory"]["entries"]}
    assert not any("site-v2" in entry for entry in inventory), inventory

    # Commit 3 promotes a version whose bundle does not match its sha256: the version fails,
    # the Deployment keeps v1 live and says why, and the Kustomization reports the failure
    # at once (Stalled is kstatus "Failed"), not after its timeout.
    repo.add_version("site-v3", "site", corrupt=True)
    repo.set_deployment("site", "site-v3")
    flux.publish(repo)
    flux.reconcile(ns)
    fourth = flux.artifact_revision(ns, third)
    failed = flux.wait_applied(ns, fourth, ready="False", timeout=150)
    # Flux fails fast on the first Failed object it reads: the version, or the Deployment
    # (Stalled, VersionFailed), whichever its poll saw first.
    assert failed["reason"] == "HealthCheckFailed", failed
    assert "failed early due to stalled resources" in failed["message"], failed
    assert f"DeploymentVersion/{ns}/site-v3 status: 'Failed'" in failed["message"] or (
        f"Deployment/{ns}/site status: 'Failed'" in failed["message"]
    ), failed
    deployment = objects.deployment("site")
    assert deployment["status"]["liveVersion"] == "site-v1"
    stalled = condition(deployment, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "VersionFailed") and "site-v3" in stalled["message"]
    assert objects.version("site-v3")["status"]["state"] == "failed"


def test_a_plugin_rollback_is_undone_by_self_heal_unless_git_leaves_promoted_version_out(
    env: Any, api: client.ApiClient, tenants: Any, operator: OperatorProcess, flux: Flux, tmp_path: Path
) -> None:
    """docs/gitops.md, "Rolling back outside Git": a field Git declares is Flux's, and each sync
    puts it back; a Deployment whose manifest has no promotedVersion leaves it to people."""
    tenant = tenants("flux")
    ns = tenant.namespace
    objects = Objects(api, ns)
    repo = Repository(tmp_path / "repo", env, ns, version_annotations=FLUX_PRUNE_DISABLED)
    for name in ("site-v1", "site-v2", "blog-v1", "blog-v2"):
        repo.add_version(name, name.split("-")[0])
    repo.set_deployment("site", "site-v2")
    repo.set_deployment("blog", None)  # promotion is operated, not declared
    flux.publish(repo)
    flux.set_up_tenant(ns, "ci")
    flux.wait_applied(ns, flux.artifact_revision(ns, None), ready="True")
    assert objects.deployment("site")["status"]["liveVersion"] == "site-v2"

    as_tenant = {"kubeconfig": str(tenant.kubeconfig)}
    ok(plugin(env, ns, "rollback", "site", "--to", "site-v1", "--wait", **as_tenant))
    assert objects.deployment("site")["status"]["liveVersion"] == "site-v1"
    flux.sync(ns)
    assert objects.deployment("site")["spec"]["promotedVersion"] == "site-v2"  # Git's value, back
    wait_until(lambda: objects.deployment("site")["status"].get("liveVersion") == "site-v2", what="site-v2 live again")

    for version in ("blog-v1", "blog-v2"):
        ok(plugin(env, ns, "promote", "blog", version, "--wait", **as_tenant))
    ok(plugin(env, ns, "rollback", "blog", "--wait", **as_tenant))
    flux.sync(ns)
    blog = objects.deployment("blog")
    assert (blog["spec"]["promotedVersion"], blog["status"]["liveVersion"]) == ("blog-v1", "blog-v1")
