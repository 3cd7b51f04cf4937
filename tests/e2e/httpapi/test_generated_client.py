"""A TypeScript client generated from the running API's /openapi.json, used from Node.

openapi-typescript (a maintained generator from npm) turns the live document into types,
tsc compiles ``tests/e2e/node/client.ts`` against them in strict mode, and openapi-fetch
makes the calls: list one end-customer's versions (the seed's
``miosa.deployments.versions.list(deploymentId, { externalWorkspaceId })``), publish a
bundle, promote it and roll back, all with a real write-scope ServiceAccount token.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx

from ..conftest import REPO, Environment
from ..helpers import tar_gz
from .conftest import ApiProcess, ApiTenant, deployment_id, upload_static, version_id

NODE_DIR = REPO / "tests" / "e2e" / "node"


def node_tool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


def test_generated_typescript_client_lists_publishes_promotes_and_rolls_back(
    api_server: ApiProcess, tenant: ApiTenant, env: Environment, tmp_path: Path
) -> None:
    tenant.objects.create_deployment("site")
    for n, workspace in ((1, "acme-team-123"), (2, "other"), (3, "acme-team-123")):
        upload_static(env, tenant, "site", f"site-v{n}", attribution={"externalWorkspaceId": workspace})
    dep = deployment_id(tenant, "site")
    first = version_id(tenant, "site-v1")
    for n in (2, 3):
        version_id(tenant, f"site-v{n}")
    live = httpx.post(
        f"{api_server.url}/api/v1/deployments/{dep}/versions/{first}/promote",
        params={"wait": "true"},
        headers={"Authorization": f"Bearer {tenant.write_token}"},
        timeout=90,
    )
    assert live.status_code == 200, live.text

    (NODE_DIR / "generated").mkdir(exist_ok=True)
    node_tool("node_modules/.bin/openapi-typescript", f"{api_server.url}/openapi.json", "-o", "generated/miosa-api.d.ts")
    node_tool("node_modules/.bin/tsc", "-p", "tsconfig.json")
    bundle = tmp_path / "site.tar.gz"
    bundle.write_bytes(tar_gz({"index.html": b"<h1>from node</h1>"}))
    result = subprocess.run(
        ["node", "dist/client.js"],
        cwd=NODE_DIR,
        env={
            **os.environ,
            "API_URL": api_server.url,
            "TOKEN": tenant.write_token,
            "DEPLOYMENT_ID": dep,
            "WORKSPACE": "acme-team-123",
            "BUNDLE": str(bundle),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["before"] == [3, 1]
    published = seen["published"]
    assert (
        published["state"] == "ready" and published["created_by"] == tenant.writer and published["workspace"] == "acme-team-123"
    )
    assert seen["promoted"] == {"status": "live", "live": published["id"]}
    assert seen["rolledBack"] == {"status": "live", "live": first}
    assert seen["after"] == [4, 3, 1]
    assert seen["history"][:3] == [
        ["rollback", "site-v1", tenant.writer],
        ["promote", tenant.objects.versions("deploy.miosa.io/version-number=4")[0]["metadata"]["name"], tenant.writer],
        ["promote", "site-v1", tenant.writer],
    ]
