"""The store's faults are the operator's, never the version's: against the real S3 server,
each fault is made real (wrong keys, a 503-answering or connection-refusing store, a bucket
that disappears), the version shows it on its conditions while it stays unfinished, the
fault is fixed, and the same version goes on to ``ready``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess, Tenant
from .faults import S3Proxy
from .helpers import Objects, condition, sha256, static_spec, tar_gz, wait_until
from .slots import SPARE_PORTS

Restart = Callable[..., None]


@pytest.fixture
def reconfigure(operator: OperatorProcess) -> Iterator[Restart]:
    """Restart the operator (gracefully) with extra settings; the original ones afterwards."""
    saved = dict(operator.extra_env)

    def restart(**settings: str) -> None:
        operator.stop()
        operator.extra_env = {**saved, **settings}
        operator.start()

    yield restart
    operator.stop()
    operator.extra_env = saved
    operator.start()


@pytest.fixture
def proxy(env: Environment) -> Iterator[S3Proxy]:
    upstream = int(env.values["MIOSA_S3_ENDPOINT"].rsplit(":", 1)[1])
    server = S3Proxy(upstream, SPARE_PORTS[0])
    yield server
    server.stop()


def site(env: Environment, tenant: Tenant, name: str) -> tuple[Objects, str, str]:
    objects = Objects(tenant.api, tenant.namespace)
    objects.create_deployment("site")
    bundle = tar_gz({"index.html": f"<h1>{name}</h1>".encode()})
    key = f"{tenant.namespace}/{name}.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    return objects, f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)


def shows(objects: Objects, name: str, reason: str, *, stalled: bool, timeout: float = 120) -> dict[str, Any]:
    """Wait until the version says ``reason`` (Reconciling, or Stalled when a person must act)."""

    def said() -> dict[str, Any] | None:
        body = objects.version(name)
        ready = condition(body, "Ready") or {}
        return body if ready.get("reason") == reason else None

    body = wait_until(said, timeout=timeout, what=f"{name} showing {reason}")
    assert body["status"]["state"] in ("created", "building")
    assert (condition(body, "Stalled") or {}).get("status") == ("True" if stalled else "False")
    assert (condition(body, "Reconciling") or {}).get("status") == ("False" if stalled else "True")
    return body


def test_wrong_keys_are_stalled_until_fixed_then_the_same_version_is_ready(
    env: Environment, operator: OperatorProcess, tenants: Any, reconfigure: Restart
) -> None:
    objects, uri, digest = site(env, tenants("a"), "keys")
    reconfigure(MIOSA_S3_SECRET_ACCESS_KEY="not-the-secret")
    objects.create_version("site-v1", static_spec("site", uri, digest))
    body = shows(objects, "site-v1", "StoreAccessDenied", stalled=True)
    assert "credentials" in (condition(body, "Ready") or {})["message"]

    reconfigure()  # a person fixed the Secret; the operator restarts with it
    assert objects.wait_state("site-v1", "ready", "failed", timeout=120)["status"]["state"] == "ready"


@pytest.mark.parametrize("fault", ["unavailable", "refuse"], ids=["503", "connection refused"])
def test_an_unavailable_store_is_retried_then_the_same_version_is_ready(
    env: Environment, operator: OperatorProcess, tenants: Any, reconfigure: Restart, proxy: S3Proxy, fault: str
) -> None:
    objects, uri, digest = site(env, tenants("a"), fault)
    reconfigure(MIOSA_S3_ENDPOINT=proxy.endpoint)
    proxy.set_mode(fault)
    objects.create_version("site-v1", static_spec("site", uri, digest))
    shows(objects, "site-v1", "StoreUnavailable", stalled=False)
    assert operator.proc is not None and operator.proc.poll() is None

    proxy.set_mode("forward")  # the store is back: no restart needed
    assert objects.wait_state("site-v1", "ready", "failed", timeout=180)["status"]["state"] == "ready"


def test_a_releases_bucket_that_disappears_stalls_the_build_until_it_is_back(
    env: Environment, operator: OperatorProcess, tenants: Any, reconfigure: Restart
) -> None:
    bucket = f"e2e-releases-{uuid.uuid4().hex[:8]}"
    s3 = env.s3()
    s3.create_bucket(Bucket=bucket)
    objects, uri, digest = site(env, tenants("a"), "bucket")
    reconfigure(MIOSA_RELEASES_URI=f"s3://{bucket}")
    s3.delete_bucket(Bucket=bucket)
    objects.create_version("site-v1", static_spec("site", uri, digest))
    body = shows(objects, "site-v1", "StoreAccessDenied", stalled=True)
    assert body["status"]["state"] == "building"  # read and verified; only the release cannot be stored
    assert "bucket does not exist" in (condition(body, "Ready") or {})["message"]

    s3.create_bucket(Bucket=bucket)
    body = objects.wait_state("site-v1", "ready", "failed", timeout=180)
    assert body["status"]["state"] == "ready" and body["status"]["artifactUri"].startswith(f"s3://{bucket}/")


def test_an_uploads_bucket_that_disappears_is_not_the_tenants_missing_object(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any, reconfigure: Restart
) -> None:
    bucket = f"e2e-uploads-{uuid.uuid4().hex[:8]}"
    s3 = env.s3()
    tenant = tenants("a")
    objects = Objects(tenant.api, tenant.namespace)
    objects.create_deployment("site")
    bundle = tar_gz({"index.html": b"<h1>uploads</h1>"})
    reconfigure(MIOSA_UPLOADS_URI=f"s3://{bucket}")
    objects.create_version("site-v1", static_spec("site", f"s3://{bucket}/{tenant.namespace}/site.tar.gz", sha256(bundle)))
    body = shows(objects, "site-v1", "StoreAccessDenied", stalled=True)
    assert body["status"]["state"] == "created"

    s3.create_bucket(Bucket=bucket)  # the operator's administrator creates it; the tenant uploads
    s3.put_object(Bucket=bucket, Key=f"{tenant.namespace}/site.tar.gz", Body=bundle)
    assert objects.wait_state("site-v1", "ready", "failed", timeout=180)["status"]["state"] == "ready"
