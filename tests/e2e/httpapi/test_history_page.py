"""The deploy-history page in a real browser (Debian's chromium via playwright-core, from Node).

The page is loaded from the real API process; a reader sees the history without buttons, a
writer filters by end-customer workspace, promotes with confirmation, and the page shows the
new live version by itself.  Screenshots are written to ``test-artifacts/`` (or
``$MIOSA_E2E_ARTIFACTS``).  ``hack/browser-tools.sh`` installs chromium and the npm packages.
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx

from ..conftest import REPO, Environment
from .conftest import ARTIFACTS, ApiProcess, ApiTenant, deployment_id, upload_static, version_id

NODE_DIR = REPO / "tests" / "e2e" / "node"


def test_history_page_filter_and_promote_in_chromium(api_server: ApiProcess, tenant: ApiTenant, env: Environment) -> None:
    tenant.objects.create_deployment("site")
    for n, workspace in ((1, "acme-team-123"), (2, "other-customer"), (3, "acme-team-123")):
        upload_static(env, tenant, "site", f"site-v{n}", attribution={"externalWorkspaceId": workspace})
    dep = deployment_id(tenant, "site")
    first, _, third = (version_id(tenant, f"site-v{n}") for n in (1, 2, 3))
    live = httpx.post(
        f"{api_server.url}/api/v1/deployments/{dep}/versions/{first}/promote",
        params={"wait": "true"},
        headers={"Authorization": f"Bearer {tenant.write_token}"},
        timeout=90,
    )
    assert live.status_code == 200, live.text

    artifacts = ARTIFACTS / "history-page"
    result = subprocess.run(
        ["node", str(NODE_DIR / "history-page.mjs")],
        env={
            **os.environ,
            "API_URL": api_server.url,
            "READ_TOKEN": tenant.read_token,
            "WRITE_TOKEN": tenant.write_token,
            "DEPLOYMENT_ID": dep,
            "WORKSPACE": "acme-team-123",
            "TARGET_VERSION_ID": third,
            "ARTIFACTS": str(artifacts),
        },
        capture_output=True,
        text=True,
        timeout=240,
        cwd=NODE_DIR,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["readerRows"] == [3, 2, 1]
    assert seen["readerPromoteButtons"] == 0 and not seen["readerRollbackVisible"]
    assert seen["tokenInSessionStorage"] and seen["cookies"] == 0
    assert seen["filteredRows"] == [3, 1]
    assert "#3" in seen["confirmText"]
    assert seen["liveBefore"] == "#1 site-v1" and seen["liveAfter"] == "#3 site-v3"
    assert not seen["phoneOverflow"]
    for name in ("history-reader", "history-filtered", "history-confirm", "history-promoted", "history-phone"):
        assert (artifacts / f"{name}.png").stat().st_size > 1000
    status = tenant.objects.deployment("site")["status"]
    assert status["liveVersion"] == "site-v3" and status["history"][-1]["actor"] == tenant.writer
