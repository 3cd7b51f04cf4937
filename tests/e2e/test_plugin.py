"""``kubectl miosa`` end to end: the real plugin process against the real cluster and operator.

The plugin runs as a subprocess (``python -m miosa_operator.plugin.cli``) with the
environment's kubeconfig and S3 settings, exactly as kubectl would run ``kubectl-miosa``;
assertions compare what it prints with what the API server stores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .conftest import RELEASES_BUCKET, UPLOADS_BUCKET, Environment, OperatorProcess, service_account_kubeconfig
from .helpers import Objects, sha256, static_spec, tar_gz, wait_until

SEED_KEYS = [
    "id",
    "deployment_id",
    "tenant_id",
    "created_by",
    "external_workspace_id",
    "external_user_id",
    "external_project_id",
    "source_sandbox_id",
    "build_id",
    "version_number",
    "kind",
    "state",
    "artifact_uri",
    "artifact_manifest",
    "artifact_sha256",
    "runtime_image",
    "runtime_command",
    "runtime_port",
    "health_check_path",
    "build_log_uri",
    "metadata",
    "promoted_at",
    "archived_at",
    "created_at",
    "updated_at",
]
EXTRA_KEYS = ["name", "runtime_args", "artifacts_collected_at", "published_by"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  \S")
ULID = "[0-9A-HJKMNP-TV-Z]{26}"
ADMIN = "miosa-admin"  # the CN of the environment's admin client certificate


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def plugin(env: Environment, namespace: str, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "miosa_operator.plugin.cli",
        "--kubeconfig",
        kubeconfig or env.kubeconfig,
        "-n",
        namespace,
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, **env.values})


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.returncode, result.stderr)
    return result.stdout


def publish(
    env: Environment, objects: Objects, s3_prefix: str, deployment: str, name: str, **spec: Any
) -> tuple[str, dict[str, bytes]]:
    """Upload a two-file bundle and create a static version of it (not waiting)."""
    files = {"index.html": f"<h1>{name}</h1>".encode(), "about.html": b"<p>about</p>"}
    bundle = tar_gz(files)
    key = f"{s3_prefix}{name}.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    objects.create_version(name, static_spec(deployment, f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle), **spec))
    return name, files


def attributed(workspace: str, n: int) -> dict[str, Any]:
    return {
        "attribution": {
            "createdBy": f"user_{n}",
            "externalWorkspaceId": workspace,
            "externalUserId": f"dev-{n}",
            "externalProjectId": "landing",
        },
        "source": {"sandboxId": f"sbx_{n}", "buildId": f"bld_{n}"},
        "metadata": {"commit": f"c{n}"},
    }


def test_versions_list_per_workspace_in_seed_shape(env: Environment, objects: Objects, namespace: str, s3_prefix: str) -> None:
    objects.create_deployment("site")
    objects.create_deployment("other")
    published = {
        "site-a1": ("acme-team-123", 1),
        "site-d1": ("dental-office-123", 2),
        "site-a2": ("acme-team-123", 3),
        "site-e1": ("team@acme.io", 4),
    }
    files = {}
    for name, (workspace, n) in published.items():
        files[name] = publish(env, objects, s3_prefix, "site", name, **attributed(workspace, n))[1]
    publish(env, objects, s3_prefix, "other", "other-a1", **attributed("acme-team-123", 5))  # another Deployment
    for name in [*published, "other-a1"]:
        assert objects.wait_state(name, "ready", "failed")["status"]["state"] == "ready"
    dep_id = objects.deployment("site")["status"]["id"]

    acme = json.loads(ok(plugin(env, namespace, "versions", "list", "site", "--workspace", "acme-team-123", "-o", "json")))
    assert sorted(v["name"] for v in acme) == ["site-a1", "site-a2"]
    assert [v["version_number"] for v in acme] == sorted((v["version_number"] for v in acme), reverse=True)
    for version in acme:
        assert_seed_shape(version, objects.version(version["name"]), dep_id, namespace, files[version["name"]])
        workspace, n = published[version["name"]]
        assert (version["external_workspace_id"], version["created_by"]) == (workspace, f"user_{n}")
        # created_by is what the publisher claimed; published_by who the API server authenticated.
        assert version["published_by"] == ADMIN
        assert (version["external_user_id"], version["external_project_id"]) == (f"dev-{n}", "landing")
        assert (version["source_sandbox_id"], version["build_id"], version["metadata"]) == (
            f"sbx_{n}",
            f"bld_{n}",
            {"commit": f"c{n}"},
        )

    # An id that is not a valid label value is selected through its hashed label.
    email = json.loads(ok(plugin(env, namespace, "versions", "list", "site", "--workspace", "team@acme.io", "-o", "json")))
    assert [(v["name"], v["external_workspace_id"]) for v in email] == [("site-e1", "team@acme.io")]
    dental = yaml.safe_load(
        ok(plugin(env, namespace, "versions", "list", "site", "--workspace", "dental-office-123", "-o", "yaml"))
    )
    assert [v["name"] for v in dental] == ["site-d1"]
    assert json.loads(ok(plugin(env, namespace, "versions", "list", "site", "--workspace", "nobody", "-o", "json"))) == []
    assert json.loads(ok(plugin(env, namespace, "versions", "list", "site", "--state", "failed", "-o", "json"))) == []

    table = ok(plugin(env, namespace, "versions", "list", "site")).splitlines()
    assert table[0].split() == ["NUMBER", "NAME", "STATE", "KIND", "WORKSPACE", "PROMOTED", "AGE"]
    assert sorted(line.split()[1] for line in table[1:]) == sorted(published)

    shown = json.loads(ok(plugin(env, namespace, "versions", "show", "site-a1", "-o", "json")))
    assert shown == next(v for v in acme if v["name"] == "site-a1")

    missing = plugin(env, namespace, "versions", "show", "nosuch")
    assert missing.returncode == 3
    assert missing.stderr.strip() == f'error: deploymentversion "nosuch" not found in namespace "{namespace}"'

    log = ok(plugin(env, namespace, "logs", "site-a1")).splitlines()
    assert log and all(LOG_LINE.match(line) for line in log), log


def assert_seed_shape(
    version: dict[str, Any], body: dict[str, Any], dep_id: str, namespace: str, files: dict[str, bytes]
) -> None:
    status = body["status"]
    assert list(version) == SEED_KEYS + EXTRA_KEYS
    assert re.fullmatch(f"ver_{ULID}", version["id"]) and version["id"] == status["id"]
    assert re.fullmatch(f"dep_{ULID}", version["deployment_id"]) and version["deployment_id"] == dep_id
    assert version["tenant_id"] == namespace
    assert isinstance(version["version_number"], int) and version["version_number"] == status["versionNumber"]
    assert (version["kind"], version["state"]) == ("static", "ready")
    assert version["artifact_uri"] == status["artifactUri"]
    assert version["artifact_uri"].startswith(f"s3://{RELEASES_BUCKET}/")
    assert version["artifact_uri"].endswith(f"/{dep_id}/{version['id']}/dist.tar.zst")
    assert version["artifact_manifest"] == {
        "files": len(files),
        "total_bytes": sum(len(d) for d in files.values()),
        "entrypoint": "index.html",
    }
    assert re.fullmatch("[0-9a-f]{64}", version["artifact_sha256"]) and version["artifact_sha256"] == status["artifactSha256"]
    assert [version[k] for k in ("runtime_image", "runtime_command", "runtime_port", "health_check_path")] == [None] * 4
    assert version["build_log_uri"] == status["buildLogUri"] and version["build_log_uri"].startswith("s3://")
    assert (version["promoted_at"], version["archived_at"], version["artifacts_collected_at"]) == (None, None, None)
    assert RFC3339.match(version["created_at"]) and version["created_at"] == body["metadata"]["creationTimestamp"]
    assert RFC3339.match(version["updated_at"]) and version["updated_at"] >= version["created_at"]
    assert version["runtime_args"] is None


def test_promote_rollback_history_with_wait(env: Environment, objects: Objects, namespace: str, s3_prefix: str) -> None:
    objects.create_deployment("site")
    v1, _ = publish(env, objects, s3_prefix, "site", "site-v1")
    v2, _ = publish(env, objects, s3_prefix, "site", "site-v2")
    bad = tar_gz({"index.html": b"x"})
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=f"{s3_prefix}bad.tar.gz", Body=bad)
    objects.create_version("site-bad", static_spec("site", f"s3://{UPLOADS_BUCKET}/{s3_prefix}bad.tar.gz", "0" * 64))
    for name in (v1, v2):
        objects.wait_state(name, "ready")
    objects.wait_state("site-bad", "failed")

    out = ok(plugin(env, namespace, "promote", "site", v1, "--wait", "--timeout", "120"))
    assert re.fullmatch(rf"site-v1 \(#\d+\) is live on deployment site \(promote by {ADMIN}\)\n", out), out
    ok(plugin(env, namespace, "promote", "site", v2, "--reason", "new hero image", "--wait", "--timeout", "120"))
    out = ok(plugin(env, namespace, "rollback", "site", "--reason", "v2 broke the form", "--wait", "--timeout", "120"))
    assert out.startswith("site-v1 (#") and out.endswith(f"(rollback by {ADMIN})\n"), out

    status = objects.deployment("site")["status"]
    assert status["liveVersion"] == v1 and not status.get("rollout")
    assert [(h["action"], h["version"], h["reason"]) for h in status["history"]] == [
        ("promote", v1, ""),
        ("promote", v2, "new hero image"),
        ("rollback", v1, "v2 broke the form"),
    ]
    assert objects.version(v2)["status"]["state"] == "archived"

    history = json.loads(ok(plugin(env, namespace, "history", "site", "-o", "json")))
    assert [(h["action"], h["version"], h["actor"]) for h in history] == [
        ("rollback", v1, ADMIN),
        ("promote", v2, ADMIN),
        ("promote", v1, ADMIN),
    ]
    assert all(RFC3339.match(h["time"]) for h in history)
    table = ok(plugin(env, namespace, "history", "site")).splitlines()
    assert table[0].split() == ["TIME", "ACTION", "VERSION", "NUMBER", "ACTOR", "REASON"] and len(table) == 4
    archived = json.loads(ok(plugin(env, namespace, "versions", "list", "site", "--state", "archived", "-o", "json")))
    assert [(v["name"], v["state"]) for v in archived] == [(v2, "archived")] and RFC3339.match(archived[0]["archived_at"])
    listing = ok(plugin(env, namespace, "versions", "list", "site"))
    assert re.search(rf"^\d+\s+{v1}\s+ready \(live\)\s+static", listing, re.M), listing

    refused = plugin(env, namespace, "promote", "site", "site-bad")
    assert refused.returncode == 1, refused.stderr
    assert "promotedVersion 'site-bad' is failed; only ready or archived versions can be promoted" in refused.stderr
    assert "{" not in refused.stderr and '"kind"' not in refused.stderr  # the message, not the Status JSON
    assert objects.deployment("site")["spec"]["promotedVersion"] == v1

    unknown = plugin(env, namespace, "promote", "site", "nosuch")
    assert unknown.returncode == 3 and f'deploymentversion "nosuch" not found in namespace "{namespace}"' in unknown.stderr
    no_dep = plugin(env, namespace, "rollback", "nowhere")
    assert no_dep.returncode == 3 and f'deployment "nowhere" not found in namespace "{namespace}"' in no_dep.stderr

    # Without --to, a second rollback goes to the previous live version: v2 again.
    assert ok(plugin(env, namespace, "rollback", "site")) == f"rollback of site to {v2} requested\n"
    assert objects.deployment("site")["spec"]["promotedVersion"] == v2


def test_unreachable_cluster_exits_5(env: Environment, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    result = plugin(env, "default", "versions", "list", "site", kubeconfig=str(kubeconfig))
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip() == "error: cannot reach the Kubernetes API server at https://127.0.0.1:1: connection refused"


def test_forbidden_actions_exit_4_and_say_what_was_refused(
    env: Environment, objects: Objects, namespace: str, s3_prefix: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """A CI bot bound to miosa-deployments-read can list but not promote."""
    env.kubectl("-n", namespace, "create", "serviceaccount", "reader")
    env.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "reader",
        "--clusterrole=miosa-deployments-read",
        f"--serviceaccount={namespace}:reader",
    )
    reader = str(service_account_kubeconfig(env, namespace, "reader", tmp_path))
    objects.create_deployment("site")
    v1, _ = publish(env, objects, s3_prefix, "site", "site-v1")
    objects.wait_state(v1, "ready")

    listing = wait_until(
        lambda: (r := plugin(env, namespace, "versions", "list", "site", "-o", "json", kubeconfig=reader)).returncode == 0 and r,
        timeout=30,
        what="reader binding in effect",
    )
    assert [v["name"] for v in json.loads(listing.stdout)] == [v1]
    refused = plugin(env, namespace, "promote", "site", v1, kubeconfig=reader)
    assert refused.returncode == 4, (refused.returncode, refused.stderr)
    assert "forbidden" in refused.stderr.lower() and "patch" in refused.stderr and "deployments" in refused.stderr
    assert "promotedVersion" not in objects.deployment("site")["spec"]
