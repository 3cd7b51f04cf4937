"""Admission end to end: what the real API server lets tenants and GitOps tools do.

The chart's admission objects (manifests/operator/admission-*.yaml: the promotion webhook
configuration with matchConditions, the Mutating- and ValidatingAdmissionPolicies) are
installed by the ``admission`` fixture as in a cluster; the API server presents its
admission client certificate (hack/env.sh) and the operator requires it.  Tenants act
through ServiceAccount tokens bound to the product's roles (``tenants``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import statistics
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import (
    ADMISSION_CONFIGURATION,
    RELEASES_BUCKET,
    UPLOADS_BUCKET,
    Admission,
    Environment,
    OperatorProcess,
    Tenant,
)
from .helpers import GROUP, VERSION, Objects, sha256, static_spec, tar_gz, wait_until
from .slots import SPARE_PORTS, WEBHOOK_PORT
from .throttle import ThrottlingProxy

ADMIN = "miosa-admin"
PROMOTED_BY = "deploy.miosa.io/promoted-by"
PUBLISHED_BY = "deploy.miosa.io/published-by"


def ci_user(tenant: Tenant) -> str:
    return f"system:serviceaccount:{tenant.namespace}:ci"


def upload_version(env: Environment, objects: Objects, deployment: str, name: str, size: int = 0, **spec: Any) -> str:
    """A static version of a small bundle (``size`` bytes of incompressible padding added)."""
    files = {"index.html": f"<h1>{name}</h1>".encode()}
    if size:
        files["padding.bin"] = os.urandom(size)
    bundle = tar_gz(files)
    key = f"{objects.namespace}/{name}-{uuid.uuid4().hex[:6]}.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    objects.create_version(name, static_spec(deployment, f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle), **spec))
    return name


def promote(objects: Objects, deployment: str, version: str | None, **metadata: Any) -> dict[str, Any]:
    patch: dict[str, Any] = {"spec": {"promotedVersion": version}}
    if metadata:
        patch["metadata"] = metadata
    return objects.custom.patch_namespaced_custom_object(GROUP, VERSION, objects.namespace, "deployments", deployment, patch)


def annotations(body: dict[str, Any]) -> dict[str, str]:
    return body["metadata"].get("annotations") or {}


def refused(call: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value


def webhook_listening(port: int = WEBHOOK_PORT) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_live(objects: Objects, deployment: str, version: str, timeout: float = 90) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        body = objects.deployment(deployment)
        status = body.get("status") or {}
        return body if status.get("liveVersion") == version and not status.get("rollout") else None

    try:
        return wait_until(live, timeout=timeout, what=f"{version} live on {deployment}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {objects.deployment(deployment).get('status')}") from None


def restart_and_wait(operator: OperatorProcess) -> None:
    operator.start()
    operator.wait_ready()


# ----------------------------------------------------------------------------- issue 9: never starved


@pytest.fixture
def operator_behind_slow_store(env: Environment, operator: OperatorProcess) -> Iterator[ThrottlingProxy]:
    """The suite's operator, restarted with its S3 endpoint behind a throttling proxy (at full
    speed until the test throttles it); put back as it was afterwards."""
    upstream = urlsplit(env.values["MIOSA_S3_ENDPOINT"])
    with ThrottlingProxy(SPARE_PORTS[0], upstream.hostname or "127.0.0.1", upstream.port or 80) as proxy:
        proxy.release()
        operator.stop()
        operator.extra_env["MIOSA_S3_ENDPOINT"] = proxy.url
        try:
            restart_and_wait(operator)
            yield proxy
        finally:
            proxy.release()
            operator.stop()
            del operator.extra_env["MIOSA_S3_ENDPOINT"]
            restart_and_wait(operator)


SLOW_INGESTIONS = 20
"""More slow bundles than the operator runs at once: every ingestion slot
(MIOSA_MAX_CONCURRENT_INGESTIONS, default 4) is taken, and the rest wait in the queue."""
INGESTION_SLOTS = 4


def timed_promotions(objects: Objects, deployment: str, versions: list[str], rounds: int) -> list[float]:
    """Seconds each promotion PATCH took to be admitted (alternating between ``versions``)."""
    seconds = []
    for i in range(rounds):
        started = time.monotonic()
        promote(objects, deployment, versions[i % len(versions)])
        seconds.append(time.monotonic() - started)
    return seconds


def test_a_promotion_is_admitted_within_2s_while_slow_ingestions_fill_every_worker(
    env: Environment, api: client.ApiClient, operator_behind_slow_store: ThrottlingProxy, tenants: Any
) -> None:
    proxy = operator_behind_slow_store
    tenant = tenants("promoter")
    promoter = Objects(tenant.api, tenant.namespace)
    promoter.create_deployment("site")
    v1 = upload_version(env, promoter, "site", "site-v1")
    v2 = upload_version(env, promoter, "site", "site-v2")
    for name in (v1, v2):
        assert promoter.wait_state(name, "ready", "failed")["status"]["state"] == "ready"
    unloaded = timed_promotions(promoter, "site", [v1, v2], rounds=6)

    # Slow bundles from other tenants (two each, so that a per-tenant share of the ingestion
    # slots does not keep them from filling every slot): each download trickles at ~2 KiB/s.
    proxy.throttled.set()
    slow: list[tuple[Objects, str]] = []
    for t in range(SLOW_INGESTIONS // 2):
        objects = Objects(api, tenants(f"slow{t}").namespace)
        objects.create_deployment("big")
        for i in range(2):
            slow.append((objects, upload_version(env, objects, "big", f"big-{i}", size=256 * 1024)))
    try:

        def all_building() -> bool:
            states = [(objects.version(name).get("status") or {}).get("state") for objects, name in slow]
            return states.count("building") >= INGESTION_SLOTS and proxy.active >= INGESTION_SLOTS

        wait_until(all_building, timeout=120, interval=1, what="every ingestion worker busy with a slow bundle")
        loaded = timed_promotions(promoter, "site", [v1, v2], rounds=6)
        still_building = sum((objects.version(name).get("status") or {}).get("state") == "building" for objects, name in slow)
    finally:
        proxy.release()
    print(
        f"\npromotion admitted (s): unloaded median {statistics.median(unloaded):.3f} max {max(unloaded):.3f}; "
        f"with {SLOW_INGESTIONS} slow ingestions median {statistics.median(loaded):.3f} max {max(loaded):.3f}"
    )
    assert still_building >= INGESTION_SLOTS, "the slow ingestions were still running while promotions were measured"
    assert max(loaded) < 2.0, loaded
    for objects, name in slow:  # released: they all finish
        assert objects.wait_state(name, "ready", "failed", timeout=180)["status"]["state"] == "ready"


# ----------------------------------------------------------------------------- issue 9: operator down


def test_while_the_operator_is_down_only_promotions_are_refused(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any
) -> None:
    tenant = tenants("a")
    mine = Objects(tenant.api, tenant.namespace)
    mine.create_deployment("site")
    v1 = upload_version(env, Objects(api, tenant.namespace), "site", "site-v1")
    mine.wait_state(v1, "ready")
    promote(mine, "site", v1)

    operator.stop()  # graceful, like an upgrade or a node drain
    try:
        # The configuration is the chart's: it survives the operator's exit.
        config = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(ADMISSION_CONFIGURATION)
        assert config.webhooks[0].match_conditions
        assert not webhook_listening()
        # Writes that do not touch spec.promotedVersion never reach the webhook.
        labelled = mine.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            tenant.namespace,
            "deployments",
            "site",
            {"metadata": {"labels": {"team": "web"}}, "spec": {"replicas": 2}},
        )
        assert labelled["metadata"]["labels"]["team"] == "web" and labelled["spec"]["replicas"] == 2
        # The actor rule is the API server's own: it holds while the operator is down.
        forged = mine.custom.patch_namespaced_custom_object(
            GROUP, VERSION, tenant.namespace, "deployments", "site", {"metadata": {"annotations": {PROMOTED_BY: "someone-else"}}}
        )
        assert annotations(forged)[PROMOTED_BY] == ci_user(tenant)
        # A promotion cannot be checked: refused (failurePolicy Fail), nothing half-done.
        error = refused(promote, mine, "site", "site-v2")
        assert error.status == 500 and "promotion.deploy.miosa.io" in error.body, error.body
        assert mine.deployment("site")["spec"]["promotedVersion"] == v1
    finally:
        restart_and_wait(operator)
    promote(mine, "site", None)  # and promotions are checked again once it is back


# ----------------------------------------------------------------------------- issue 10: only the API server


def post_review(review: dict[str, Any], client_cert: tuple[Path, Path] | None) -> dict[str, Any]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # we probe the server, not trust it
    if client_cert:
        context.load_cert_chain(*client_cert)
    request = urllib.request.Request(
        f"https://127.0.0.1:{WEBHOOK_PORT}/promotion",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def probe(namespace: str, object_namespace: str, version: str) -> dict[str, Any]:
    """What a tenant would post to learn whether ``version`` exists in another namespace."""
    deployment = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Deployment",
        "metadata": {"name": "site", "namespace": object_namespace},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": GROUP, "version": VERSION, "kind": "Deployment"},
            "resource": {"group": GROUP, "version": VERSION, "resource": "deployments"},
            "namespace": namespace,
            "name": "site",
            "operation": "CREATE",
            "userInfo": {"username": "mallory"},
            "object": {**deployment, "spec": {"kind": "static", "promotedVersion": version}},
        },
    }


def test_the_webhook_answers_only_the_api_server_and_only_about_the_objects_namespace(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, admission: Admission, tenants: Any
) -> None:
    victim = tenants("victim")
    Objects(api, victim.namespace).create_deployment("site")
    upload_version(env, Objects(api, victim.namespace), "site", "secret-v1")
    attacker = tenants("attacker")
    wait_until(webhook_listening, timeout=30, what="webhook listening")

    # Without the API server's client certificate: refused during the TLS handshake.
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post_review(probe(victim.namespace, victim.namespace, "secret-v1"), client_cert=None)
    # The cluster admin's certificate is signed by the cluster CA, not the admission client CA.
    pki = Path(env.kubeconfig).parent / "pki"
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post_review(probe(victim.namespace, victim.namespace, "secret-v1"), client_cert=(pki / "admin.crt", pki / "admin.key"))

    # Even with the API server's own certificate, a review naming the attacker's namespace
    # for an object of the victim's is refused before any lookup: the same answer whether
    # the version exists or not.
    apiserver = (admission.client_cert, admission.client_key)
    answers = [
        post_review(probe(attacker.namespace, victim.namespace, name), client_cert=apiserver)["response"]
        for name in ("secret-v1", "no-such-version")
    ]
    for answer in answers:
        assert answer["allowed"] is False and "warnings" not in answer
        assert answer["status"]["message"] == "the object under review is not in the namespace of the admission request"


# ----------------------------------------------------------------------------- issue 10: the actor


def tenant_objects(tenant: Tenant) -> Objects:
    return Objects(tenant.api, tenant.namespace)


def test_who_promoted_is_the_authenticated_user_whatever_the_client_writes(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any
) -> None:
    tenant = tenants("a")
    mine, admin = tenant_objects(tenant), Objects(api, tenant.namespace)
    me = ci_user(tenant)
    created = mine.custom.create_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "deployments", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Deployment",
        "metadata": {"name": "site", "annotations": {PROMOTED_BY: "the-ceo"}}, "spec": {"kind": "static"},
    })  # fmt: skip
    assert PROMOTED_BY not in annotations(created), "nothing promoted: nobody promoted it"
    v1 = upload_version(env, admin, "site", "site-v1")
    v2 = upload_version(env, admin, "site", "site-v2")
    for name in (v1, v2):
        admin.wait_state(name, "ready")

    # A promotion records the requesting user, not what the request claims.
    assert annotations(promote(mine, "site", v1, annotations={PROMOTED_BY: "the-ceo"}))[PROMOTED_BY] == me
    # Any later write keeps the recorded value: overwrite, removal, dry run.
    assert annotations(mine.custom.patch_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "deployments", "site", {"metadata": {"annotations": {PROMOTED_BY: "the-ceo"}}}
    ))[PROMOTED_BY] == me  # fmt: skip
    assert annotations(mine.custom.patch_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "deployments", "site", {"metadata": {"annotations": {PROMOTED_BY: None}}}
    ))[PROMOTED_BY] == me  # fmt: skip
    dry = env.kubectl(
        "-n", tenant.namespace, "annotate", "--overwrite", "--dry-run=server", "-o", "json",
        "deployments.deploy.miosa.io", "site", f"{PROMOTED_BY}=the-ceo",
    )  # fmt: skip
    assert annotations(json.loads(dry.stdout))[PROMOTED_BY] == me
    # The admin's promotion names the admin; the history follows the recorded actors.
    wait_live(admin, "site", v1)
    assert annotations(promote(admin, "site", v2))[PROMOTED_BY] == ADMIN
    wait_live(admin, "site", v2)
    assert annotations(promote(mine, "site", v1))[PROMOTED_BY] == me
    history = wait_live(admin, "site", v1)["status"]["history"]
    assert [(e["version"], e["actor"]) for e in history] == [(v1, me), (v2, ADMIN), (v1, me)]


def test_who_published_a_version_is_recorded_at_creation_and_never_changes(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any
) -> None:
    tenant = tenants("a")
    mine = tenant_objects(tenant)
    Objects(api, tenant.namespace).create_deployment("site")
    bundle = tar_gz({"index.html": b"<h1>hi</h1>"})
    key = f"{tenant.namespace}/site.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    spec = static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle), attribution={"createdBy": "the-ceo@example.com"})
    created = mine.custom.create_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "deploymentversions", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "DeploymentVersion",
        "metadata": {"name": "site-v1", "annotations": {PUBLISHED_BY: "the-ceo"}}, "spec": spec,
    })  # fmt: skip
    assert annotations(created)[PUBLISHED_BY] == ci_user(tenant)
    assert created["spec"]["attribution"]["createdBy"] == "the-ceo@example.com"  # the claim stays as written
    for change in ({PUBLISHED_BY: "the-ceo"}, {PUBLISHED_BY: None}):
        patched = mine.patch_version("site-v1", {"metadata": {"annotations": change}})
        assert annotations(patched)[PUBLISHED_BY] == ci_user(tenant)
    ready = mine.wait_state("site-v1", "ready")  # the operator's own writes keep it too
    assert annotations(ready)[PUBLISHED_BY] == ci_user(tenant)


# ----------------------------------------------------------------------------- issue 11: SSA, owned metadata


def kubectl_as(env: Environment, tenant: Tenant, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(env.bin_dir / "kubectl"), "--kubeconfig", str(tenant.kubeconfig), "-n", tenant.namespace, *args]
    return subprocess.run(command, capture_output=True, text=True, input=input, timeout=120)


def test_server_side_apply_creates_and_reapplying_changes_nothing(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any
) -> None:
    tenant = tenants("gitops")
    bundle = tar_gz({"index.html": b"<h1>gitops</h1>"})
    key = f"{tenant.namespace}/site-v1.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    manifest = yaml.safe_dump_all([
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeploymentVersion", "metadata": {"name": "site-v1", "labels": {"deploy.miosa.io/deployment": "site"}},
         "spec": static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle), attribution={"externalWorkspaceId": "acme"})},
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Deployment", "metadata": {"name": "site"},
         "spec": {"kind": "static", "promotedVersion": "site-v1"}},
    ])  # fmt: skip
    first = kubectl_as(env, tenant, "apply", "--server-side", "--field-manager=gitops", "-f", "-", input=manifest)
    assert first.returncode == 0, first.stderr
    admin = Objects(api, tenant.namespace)
    wait_live(admin, "site", "site-v1", timeout=120)
    version = admin.version("site-v1")
    assert version["metadata"]["labels"]["deploy.miosa.io/external-workspace-id"] == "acme"  # the operator's label
    time.sleep(3)  # let every follow-up write of the operator land
    before = {
        kind: body["metadata"]["resourceVersion"]
        for kind, body in (("version", admin.version("site-v1")), ("deployment", admin.deployment("site")))
    }
    events = len(client.CoreV1Api(api).list_namespaced_event(tenant.namespace).items)

    again = kubectl_as(env, tenant, "apply", "--server-side", "--field-manager=gitops", "-f", "-", input=manifest)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout or again.stdout.count("serverside-applied") == 2, again.stdout
    time.sleep(3)
    after = {
        kind: body["metadata"]["resourceVersion"]
        for kind, body in (("version", admin.version("site-v1")), ("deployment", admin.deployment("site")))
    }
    assert after == before, "re-applying the same manifests must not write anything"
    assert len(client.CoreV1Api(api).list_namespaced_event(tenant.namespace).items) == events

    # The operator's labels are not the tenant's: not with patch, not with a forced apply.
    hijack = {"metadata": {"labels": {"deploy.miosa.io/external-workspace-id": "victim-workspace"}}}
    error = refused(tenant_objects(tenant).patch_version, "site-v1", hijack)
    assert error.status == 403 and "written only by the operator" in error.body
    forced = kubectl_as(
        env, tenant, "label", "--overwrite", "deploymentversions.deploy.miosa.io", "site-v1", "deploy.miosa.io/version-number=99"
    )
    assert forced.returncode != 0 and "written only by the operator" in forced.stderr
    # Its own labels are the tenant's to manage.
    assert (
        tenant_objects(tenant).patch_version("site-v1", {"metadata": {"labels": {"team": "web"}}})["metadata"]["labels"]["team"]
        == "web"
    )


def test_a_version_may_carry_only_the_labels_its_spec_derives(env: Environment, operator: OperatorProcess, tenants: Any) -> None:
    tenant = tenants("a")
    spec = static_spec(
        "site", f"s3://{UPLOADS_BUCKET}/{tenant.namespace}/x.tar.gz", "0" * 64, attribution={"externalWorkspaceId": "acme"}
    )

    def create(name: str, labels: dict[str, str]) -> int:
        try:
            tenant_objects(tenant).create_version(name, spec, labels=labels)
            return 200
        except ApiException as exc:
            return exc.status

    assert create("copied", {"deploy.miosa.io/deployment": "site", "deploy.miosa.io/external-workspace-id": "acme"}) == 200
    assert create("claims-another-customer", {"deploy.miosa.io/external-workspace-id": "victim"}) == 403
    assert create("claims-a-number", {"deploy.miosa.io/version-number": "1"}) == 403
    assert create("claims-a-user", {"deploy.miosa.io/external-user-id": "someone"}) == 403  # no such attribution
    assert create("claims-a-hash", {"deploy.miosa.io/deployment": "h-" + "0" * 40}) == 403


# ----------------------------------------------------------------------------- issue 11: the audit record


def bind_user(
    api: client.ApiClient, namespace: str, role: str, kind: str = "ClusterRole", probe: str = "deploymentversions"
) -> client.CustomObjectsApi:
    """A new user bound to ``role`` in ``namespace``, once the binding is in effect (it can
    list ``probe``)."""
    from miosa_operator.kube.client import load_api_client

    user = f"{role}-{uuid.uuid4().hex[:6]}"
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(namespace, {
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })  # fmt: skip
    impersonated = load_api_client()
    impersonated.set_default_header("Impersonate-User", user)
    custom = client.CustomObjectsApi(impersonated)
    wait_until(
        lambda: _status(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, probe) == 200,
        timeout=30, what=f"{role} binding in effect",
    )  # fmt: skip
    return custom


def _status(call: Any, *args: Any, **kwargs: Any) -> int:
    try:
        call(*args, **kwargs)
        return 200
    except ApiException as exc:
        return exc.status


def release_keys(env: Environment, namespace: str) -> list[str]:
    pages = env.s3().get_paginator("list_objects_v2").paginate(Bucket=RELEASES_BUCKET, Prefix=f"{namespace}/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_a_version_is_deleted_only_by_a_retention_admin_or_with_its_namespace(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any
) -> None:
    tenant = tenants("leaving")
    admin = Objects(api, tenant.namespace)
    admin.create_deployment("site")
    for name in ("site-v1", "site-v2", "site-v3"):
        upload_version(env, admin, "site", name)
    for name in ("site-v1", "site-v2", "site-v3"):
        admin.wait_state(name, "ready")
    assert len(release_keys(env, tenant.namespace)) >= 3

    def delete(custom: client.CustomObjectsApi, name: str) -> ApiException | None:
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "deploymentversions", name)
            return None
        except ApiException as exc:
            return exc

    # The write scope (and so `edit`) has no delete.
    assert delete(tenant_objects(tenant).custom, "site-v1").status == 403
    assert delete(bind_user(api, tenant.namespace, "edit"), "site-v1").status == 403
    # A role that grants delete, as many hand-written roles do, is not enough: the policy asks
    # for the retention admin's custom verb.
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(tenant.namespace, {"metadata": {"name": "pruner"}, "rules": [
        {"apiGroups": [GROUP], "resources": ["deploymentversions"], "verbs": ["get", "list", "delete"]},
    ]})  # fmt: skip
    error = delete(bind_user(api, tenant.namespace, "pruner", kind="Role"), "site-v1")
    assert error is not None and error.status == 403 and "audit record" in error.body, error
    # `retain` is the retention admin's decision as well.
    retain = {"metadata": {"annotations": {"deploy.miosa.io/retain": "true"}}}
    assert refused(tenant_objects(tenant).patch_version, "site-v2", retain).status == 403
    retention_admin = bind_user(api, tenant.namespace, "miosa-retention-admin", probe="retentionpolicies")
    retention_admin.patch_namespaced_custom_object(GROUP, VERSION, tenant.namespace, "deploymentversions", "site-v2", retain)
    assert delete(retention_admin, "site-v1") is None  # tenant offboarding, one record at a time

    # Deleting the namespace deletes the rest (the namespace's own cleanup is let through)
    # and the operator removes the tenant's releases from the store.
    client.CoreV1Api(api).delete_namespace(tenant.namespace)

    def gone() -> bool:
        return _status(client.CoreV1Api(api).read_namespace, tenant.namespace) == 404

    wait_until(gone, timeout=120, interval=1, what="namespace deleted")
    wait_until(lambda: release_keys(env, tenant.namespace) == [], timeout=60, interval=1, what="releases removed from the store")


def test_offboarding_sweep_removes_only_releases_of_namespaces_that_are_gone(
    env: Environment, api: client.ApiClient, namespace: str
) -> None:
    from miosa_operator.controllers.offboarding import TenantOffboarding
    from miosa_operator.kube.client import Kube
    from miosa_operator.settings import Settings
    from miosa_operator.store.router import StoreRouter

    ghost = f"e2e-gone-{uuid.uuid4().hex[:6]}"
    s3 = env.s3()
    for tenant in (ghost, namespace):
        for key in ("dep_1/ver_1/dist.tar.zst", "dep_1/ver_1/build.log", "dep_2/ver_9/dist.tar.zst"):
            s3.put_object(Bucket=RELEASES_BUCKET, Key=f"{tenant}/{key}", Body=b"x")
    settings = Settings.from_env({**env.values, "MIOSA_RELEASES_URI": f"s3://{RELEASES_BUCKET}"})
    offboarding = TenantOffboarding(Kube(api), StoreRouter.from_settings(settings), settings.releases_uri)
    collected = offboarding.sweep()
    assert collected.get(ghost) == 3 and namespace not in collected
    assert release_keys(env, ghost) == []
    assert len(release_keys(env, namespace)) == 3
    assert offboarding.collect(namespace) == 0  # it exists: nothing is touched


def test_the_operator_keeps_only_the_ca_bundle_of_the_installed_configuration(
    api: client.ApiClient, operator: OperatorProcess, admission: Admission
) -> None:
    """The configuration is the chart's (rules, matchConditions); the operator's CA is in it."""
    config = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(ADMISSION_CONFIGURATION)
    (webhook,) = config.webhooks
    assert webhook.failure_policy == "Fail" and webhook.side_effects == "None"
    assert webhook.client_config.url == f"https://127.0.0.1:{WEBHOOK_PORT}/promotion"
    assert base64.b64decode(webhook.client_config.ca_bundle) == admission.cert.read_bytes()
    assert [c.name for c in webhook.match_conditions] == ["sets-or-changes-promoted-version"]
