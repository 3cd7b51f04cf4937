"""``kubectl miosa publish`` end to end: pack a directory, publish through the API, promote, wait."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..conftest import UPLOADS_BUCKET, Environment, service_account_kubeconfig
from .conftest import ApiProcess, ApiTenant, deployment_id


def plugin(env: Environment, kubeconfig: Path, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "miosa_operator.plugin.cli", "--kubeconfig", str(kubeconfig), "-n", namespace, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, **env.values})


def test_publish_a_directory_promote_and_wait(
    api_server: ApiProcess, tenant: ApiTenant, env: Environment, tmp_path: Path
) -> None:
    tenant.objects.create_deployment("site")
    dep = deployment_id(tenant, "site")
    site = tmp_path / "dist"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<h1>from a directory</h1>")
    (site / "assets" / "app.css").write_text("body{}")
    writer = service_account_kubeconfig(env, tenant.namespace, "writer", tmp_path)

    first = plugin(
        env,
        writer,
        tenant.namespace,
        "publish",
        str(site),
        "--deployment",
        "site",
        "--workspace",
        "acme-team-123",
        "--promote",
        "--wait",
        "--api",
        api_server.url,
    )
    assert first.returncode == 0, first.stderr
    assert "(2 files, packed)" in first.stdout and "promotion of" in first.stdout and ": live" in first.stdout
    status = tenant.objects.deployment("site")["status"]
    live = tenant.objects.version(status["liveVersion"])
    assert live["spec"]["attribution"] == {"createdBy": tenant.writer, "externalWorkspaceId": "acme-team-123"}
    assert status["history"][-1]["actor"] == tenant.writer
    uri = live["spec"]["artifact"]["uri"]
    assert uri.startswith(f"s3://{UPLOADS_BUCKET}/{tenant.namespace}/{dep}/") and uri.endswith(".tar.zst")

    # Packing is reproducible: touching the files changes nothing, the same bundle is published again.
    for path in site.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
    again = plugin(env, writer, tenant.namespace, "publish", str(site), "--deployment", "site", "--wait", "--api", api_server.url)
    assert again.returncode == 0, again.stderr
    newest = max(tenant.objects.versions("deploy.miosa.io/deployment=site"), key=lambda v: v["status"].get("versionNumber") or 0)
    assert newest["spec"]["artifact"]["uri"] == uri

    reader = service_account_kubeconfig(env, tenant.namespace, "reader", tmp_path)
    refused = plugin(env, reader, tenant.namespace, "publish", str(site), "--deployment", "site", "--api", api_server.url)
    assert refused.returncode == 4 and "forbidden" in refused.stderr
