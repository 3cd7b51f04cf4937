"""The seed's endpoints over HTTP with real ServiceAccount tokens: scopes, actor, paging, tenancy."""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
from typing import Any

import httpx
import pytest
from kubernetes import client

from ..conftest import UPLOADS_BUCKET, Environment, create_namespace
from ..helpers import Objects, sha256, static_spec, tar_gz, wait_until
from .conftest import ApiProcess, ApiTenant, deployment_id, make_tenant, upload_static, version_id

ULID = "[0-9A-HJKMNP-TV-Z]{26}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_401_403_200_and_the_history_names_the_caller(api_server: ApiProcess, tenant: ApiTenant, env: Environment) -> None:
    tenant.objects.create_deployment("site")
    upload_static(env, tenant, "site", "site-v1")
    dep = deployment_id(tenant, "site")
    ver = version_id(tenant, "site-v1")
    url = f"{api_server.url}/api/v1/deployments/{dep}/versions/{ver}/promote"

    anonymous = httpx.post(url)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
    bogus = httpx.post(url, headers=bearer("not-a-token"))
    assert bogus.status_code == 401

    reader = httpx.post(url, headers=bearer(tenant.read_token))
    assert reader.status_code == 403 and reader.json()["code"] == "forbidden"
    assert "miosa-deployments-write" in reader.json()["message"]

    writer = httpx.post(
        url, params={"wait": "true", "timeout": "60"}, json={"reason": "launch"}, headers=bearer(tenant.write_token), timeout=90
    )
    assert writer.status_code == 200, writer.text
    result = writer.json()
    assert result["status"] == "live" and result["version"]["id"] == ver
    last = result["deployment"]["history"][0]
    assert (last["action"], last["version"], last["actor"], last["reason"]) == ("promote", "site-v1", tenant.writer, "launch")
    # The API server stored the same actor: the write was made with the caller's own token.
    stored = tenant.objects.deployment("site")["status"]["history"][-1]
    assert stored["actor"] == tenant.writer

    page = httpx.get(f"{api_server.url}/api/v1/deployments/{dep}", headers=bearer(tenant.read_token)).json()
    assert page["live_version"]["id"] == ver and page["permissions"] == {"read": True, "promote": False, "publish": False}
    # The access log is JSON and names the caller, never the token.
    records = [json.loads(line) for line in api_server.log().splitlines() if line.startswith('{"time"') and '"request"' in line]
    assert any(r["user"] == tenant.writer and r["path"].endswith("/promote") and r["status"] == 200 for r in records)
    assert tenant.write_token not in api_server.log()


def test_pagination_over_250_versions_and_the_workspace_filter(
    api_server: ApiProcess, tenant: ApiTenant, env: Environment
) -> None:
    tenant.objects.create_deployment("shop")
    bundle = tar_gz({"index.html": b"<h1>shop</h1>"})
    key = f"{tenant.namespace}/shop.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    spec = static_spec("shop", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle))

    def create(i: int) -> None:
        workspace = "acme-team-123" if i % 5 == 0 else f"ws-{i % 7}"
        tenant.objects.create_version(f"shop-{i:03d}", {**spec, "attribution": {"externalWorkspaceId": workspace}})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(250)))

    def numbered() -> bool:
        items = tenant.objects.versions("deploy.miosa.io/deployment=shop,deploy.miosa.io/version-number")
        return len(items) == 250

    wait_until(numbered, timeout=600, interval=2, what="250 versions numbered and labelled")
    dep = deployment_id(tenant, "shop")
    url = f"{api_server.url}/api/v1/deployments/{dep}/versions"

    def all_pages(params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        seen, cursor, pages = [], None, 0
        while True:
            answer = httpx.get(
                url, params={**params, **({"cursor": cursor} if cursor else {})}, headers=bearer(tenant.read_token)
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            seen += body["data"]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                return seen, pages

    versions, pages = all_pages({"limit": 20})
    numbers = [v["version_number"] for v in versions]
    assert numbers == list(range(250, 0, -1)), "pages overlap or skip"
    assert pages == 13 and len({v["id"] for v in versions}) == 250

    acme, _ = all_pages({"limit": 15, "external_workspace_id": "acme-team-123"})
    assert len(acme) == 50 and {v["external_workspace_id"] for v in acme} == {"acme-team-123"}
    assert [v["version_number"] for v in acme] == sorted((v["version_number"] for v in acme), reverse=True)
    expected = {v["name"] for v in versions if v["external_workspace_id"] == "acme-team-123"}
    assert {v["name"] for v in acme} == expected


def test_another_tenants_ids_are_404_like_unknown_ones(
    api_server: ApiProcess, tenant: ApiTenant, env: Environment, api: client.ApiClient
) -> None:
    other_ns = f"{tenant.namespace[:50]}-b"
    create_namespace(api, other_ns)
    try:
        other = make_tenant(env, api, other_ns)
        other.objects.create_deployment("site")
        upload_static(env, other, "site", "site-v1")
        tenant.objects.create_deployment("site")
        upload_static(env, tenant, "site", "site-v1")
        theirs_dep, theirs_ver = deployment_id(other, "site"), version_id(other, "site-v1")
        mine_dep = deployment_id(tenant, "site")
        unknown = f"dep_{'7' * 26}"
        answers = [
            httpx.get(f"{api_server.url}/api/v1/deployments/{theirs_dep}/versions", headers=bearer(tenant.write_token)),
            httpx.get(f"{api_server.url}/api/v1/deployments/{theirs_dep}", headers=bearer(tenant.write_token)),
            httpx.get(f"{api_server.url}/api/v1/deployments/{unknown}/versions", headers=bearer(tenant.write_token)),
            httpx.get(
                f"{api_server.url}/api/v1/deployments/{mine_dep}/versions/{theirs_ver}", headers=bearer(tenant.write_token)
            ),
            httpx.post(
                f"{api_server.url}/api/v1/deployments/{theirs_dep}/versions/{theirs_ver}/promote",
                headers=bearer(tenant.write_token),
            ),
            httpx.post(f"{api_server.url}/api/v1/deployments/{theirs_dep}/rollback", headers=bearer(tenant.write_token)),
            httpx.post(
                f"{api_server.url}/api/v1/deployments/{theirs_dep}/versions",
                content=tar_gz({"index.html": b"x"}),
                headers={**bearer(tenant.write_token), "Content-Type": "application/gzip"},
            ),
        ]
        assert [a.status_code for a in answers] == [404] * len(answers)
        assert len({a.text for a in answers}) == 1, "a 404 must not tell 'not yours' from 'unknown'"
        # The other tenant's own token sees it.
        assert httpx.get(f"{api_server.url}/api/v1/deployments/{theirs_dep}", headers=bearer(other.read_token)).status_code == 200
    finally:
        client.CoreV1Api(api).delete_namespace(other_ns)


def test_a_failed_version_is_422_and_auto_policy_is_409(
    api_server: ApiProcess, tenant: ApiTenant, env: Environment, objects_api: Objects
) -> None:
    tenant.objects.create_deployment("site")
    upload_static(env, tenant, "site", "site-bad", good=False)
    upload_static(env, tenant, "site", "site-v2")
    dep = deployment_id(tenant, "site")
    bad = version_id(tenant, "site-bad", "failed")
    good = version_id(tenant, "site-v2")
    refused = httpx.post(f"{api_server.url}/api/v1/deployments/{dep}/versions/{bad}/promote", headers=bearer(tenant.write_token))
    assert refused.status_code == 422 and refused.json()["code"] == "not_promotable"
    assert "failed" in refused.json()["message"]
    assert not (tenant.objects.deployment("site")["spec"].get("promotedVersion"))

    objects_api.patch_deployment(tenant.namespace, "site", {"spec": {"promotionPolicy": "Auto"}})
    auto = httpx.post(f"{api_server.url}/api/v1/deployments/{dep}/versions/{good}/promote", headers=bearer(tenant.write_token))
    assert auto.status_code == 409 and auto.json()["code"] == "auto_promotion"


@pytest.fixture
def objects_api(api: client.ApiClient) -> Any:
    class Admin:
        def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                "deploy.miosa.io", "v1alpha1", namespace, "deployments", name, patch
            )

    return Admin()


def test_publish_a_bundle_streams_it_to_the_tenants_prefix(api_server: ApiProcess, tenant: ApiTenant, env: Environment) -> None:
    tenant.objects.create_deployment("site")
    dep = deployment_id(tenant, "site")
    bundle = tar_gz({"index.html": b"<h1>published</h1>", "app.js": b"console.log(1)"})
    answer = httpx.post(
        f"{api_server.url}/api/v1/deployments/{dep}/versions",
        params={
            "external_workspace_id": "dental-office-123",
            "build_id": "bld_1",
            "wait": "true",
            "metadata": '{"commit":"abc"}',
        },
        content=io.BytesIO(bundle).read(),
        headers={**bearer(tenant.write_token), "Content-Type": "application/gzip"},
        timeout=120,
    )
    assert answer.status_code == 201, answer.text
    version = answer.json()
    assert re.fullmatch(f"ver_{ULID}", version["id"]) and version["state"] == "ready"
    assert version["created_by"] == tenant.writer and version["external_workspace_id"] == "dental-office-123"
    assert version["build_id"] == "bld_1" and version["metadata"] == {"commit": "abc"}
    stored = tenant.objects.version(version["name"])["spec"]["artifact"]
    assert stored["sha256"] == sha256(bundle)
    assert stored["uri"] == f"s3://{UPLOADS_BUCKET}/{tenant.namespace}/{dep}/{sha256(bundle)}.tar.gz"
    body = env.s3().get_object(Bucket=UPLOADS_BUCKET, Key=stored["uri"].split("/", 3)[3])["Body"].read()
    assert body == bundle

    read_only = httpx.post(
        f"{api_server.url}/api/v1/deployments/{dep}/versions",
        content=bundle,
        headers={**bearer(tenant.read_token), "Content-Type": "application/gzip"},
    )
    assert read_only.status_code == 403
    too_big = httpx.post(
        f"{api_server.url}/api/v1/deployments/{dep}/versions",
        content=b"\0" * (9 * 1024 * 1024),
        headers={**bearer(tenant.write_token), "Content-Type": "application/x-tar"},
    )
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large"
    junk = httpx.post(
        f"{api_server.url}/api/v1/deployments/{dep}/versions",
        content=b"<html>not a bundle</html>" * 50,
        headers={**bearer(tenant.write_token), "Content-Type": "application/octet-stream"},
    )
    assert junk.status_code == 415


def test_hostile_requests_get_clear_4xx_and_the_server_keeps_serving(api_server: ApiProcess, tenant: ApiTenant) -> None:
    tenant.objects.create_deployment("site")
    dep = deployment_id(tenant, "site")
    base = f"{api_server.url}/api/v1/deployments/{dep}"
    auth = bearer(tenant.write_token)
    cases = [
        httpx.post(f"{base}/rollback", content=b"{oops", headers={**auth, "Content-Type": "application/json"}),
        httpx.post(f"{base}/rollback", content=b"[" * 100_000, headers={**auth, "Content-Type": "application/json"}),
        httpx.get(f"{base}/versions", params={"cursor": "AAAA"}, headers=auth),
        httpx.get(f"{base}/versions", params={"limit": "-1"}, headers=auth),
        httpx.get(f"{api_server.url}/api/v1/deployments/..%2F..%2Fapi%2Fv1/versions", headers=auth),
        httpx.get(f"{api_server.url}/api/v1/deployments/{dep}%00/versions", headers=auth),
        httpx.get(f"{base}/versions", headers={"Authorization": "Bearer " + "A" * 20_000}),
    ]
    assert [c.status_code for c in cases] == [400, 413, 400, 400, 404, 404, 401]
    assert all("code" in c.json() for c in cases)
    assert httpx.get(f"{api_server.url}/healthz").status_code == 200
    nothing_to_roll_back = httpx.post(f"{base}/rollback", headers=auth)
    assert nothing_to_roll_back.status_code == 409 and nothing_to_roll_back.json()["code"] == "no_previous_version"


def test_openapi_document(api_server: ApiProcess) -> None:
    doc = httpx.get(f"{api_server.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {
        "/api/v1/deployments/{deployment_id}/versions",
        "/api/v1/deployments/{deployment_id}/versions/{version_id}",
        "/api/v1/deployments/{deployment_id}/versions/{version_id}/promote",
        "/api/v1/deployments/{deployment_id}/rollback",
        "/api/v1/deployments/{deployment_id}",
    }
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_sigterm_lets_requests_in_flight_finish(api_kubeconfig: Any, tenant: ApiTenant, env: Environment) -> None:
    """Graceful shutdown: a publish whose body is still arriving completes, then the process ends."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    from .conftest import free_port

    tenant.objects.create_deployment("site")
    dep = deployment_id(tenant, "site")
    port = free_port()
    exe = Path(sys.executable).parent / "miosa-operator"
    environment = {**os.environ, **env.values, "KUBECONFIG": str(api_kubeconfig), "MIOSA_API_PORT": str(port)}
    proc = subprocess.Popen(
        [str(exe), "api"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=60, interval=0.2, what="second API process ready")
        bundle = tar_gz({"index.html": b"<h1>slow</h1>"})

        def slowly() -> Any:
            for i in range(0, len(bundle), 40):
                time.sleep(0.05)
                yield bundle[i : i + 40]

        answer: dict[str, Any] = {}

        def publish() -> None:
            answer["response"] = httpx.post(
                f"{url}/api/v1/deployments/{dep}/versions",
                content=slowly(),
                headers={**bearer(tenant.write_token), "Content-Type": "application/gzip"},
                timeout=60,
            )

        worker = threading.Thread(target=publish)
        worker.start()
        time.sleep(0.4)
        os.killpg(proc.pid, signal.SIGTERM)
        worker.join(timeout=60)
        assert answer["response"].status_code == 201, answer["response"].text
        # uvicorn drains, shuts the application down, then re-raises SIGTERM (exit by the signal).
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
        assert b"Application shutdown complete" in (proc.stderr.read() if proc.stderr else b"")
        assert not _ready(url)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
