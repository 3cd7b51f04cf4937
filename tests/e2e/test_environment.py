"""The local environment is the real thing: workloads roll out, CEL rules, RBAC, S3."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import REPO, UPLOADS_BUCKET, Environment
from .helpers import wait_until


def test_deployment_becomes_available_and_service_gets_endpoints(api: client.ApiClient, namespace: str) -> None:
    apps, core, discovery = client.AppsV1Api(api), client.CoreV1Api(api), client.DiscoveryV1Api(api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {  # the namespace enforces Pod Security "restricted"
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1.27",
                                "ports": [{"containerPort": 80}],
                                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                            }
                        ],
                    },
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "web"}, "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 80}]}}
    )

    def available() -> bool:
        status = apps.read_namespaced_deployment(name="web", namespace=namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return status.available_replicas == 2 and conditions.get("Available") == "True"

    wait_until(available, timeout=90)
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    assert {p.spec.node_name for p in pods} <= {"kwok-node-0", "kwok-node-1"}

    def ready_endpoints() -> list[str]:
        slices = discovery.list_namespaced_endpoint_slice(namespace, label_selector="kubernetes.io/service-name=web").items
        return [
            address for s in slices for e in s.endpoints or [] if e.conditions and e.conditions.ready for address in e.addresses
        ]

    addresses = wait_until(lambda: len(set(ready_endpoints())) == 2 and ready_endpoints(), timeout=60, what="two ready endpoints")
    assert sorted(addresses) == sorted(p.status.pod_ip for p in pods)


TEST_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "frozens.smoke.miosa.io"},
    "spec": {
        "group": "smoke.miosa.io",
        "names": {"kind": "Frozen", "plural": "frozens", "singular": "frozen", "listKind": "FrozenList"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"value": {"type": "string", "maxLength": 64}},
                                "x-kubernetes-validations": [
                                    {"rule": "self == oldSelf", "message": "spec is frozen for the smoke test"}
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_cel_rule_on_spec_rejects_change_with_422(api: client.ApiClient, namespace: str) -> None:
    ext, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    try:
        ext.create_custom_resource_definition(TEST_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition("frozens.smoke.miosa.io")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_until(established, timeout=30)
    body = {"apiVersion": "smoke.miosa.io/v1", "kind": "Frozen", "metadata": {"name": "ice"}, "spec": {"value": "a"}}
    wait_until(lambda: _create_ok(custom, namespace, body), timeout=30)
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object("smoke.miosa.io", "v1", namespace, "frozens", "ice", {"spec": {"value": "b"}})
    assert caught.value.status == 422
    assert "spec is frozen for the smoke test" in caught.value.body


def _create_ok(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> bool:
    try:
        custom.create_namespaced_custom_object("smoke.miosa.io", "v1", namespace, "frozens", body)
        return True
    except ApiException as exc:
        if exc.status == 404:  # discovery not caught up yet
            return False
        raise


def test_rbac_forbids_then_allows_after_rolebinding(api: client.ApiClient, namespace: str) -> None:
    from miosa_operator.kube.client import load_api_client

    impersonated = load_api_client()
    impersonated.set_default_header("Impersonate-User", "smoke-user")
    as_user = client.CoreV1Api(impersonated)
    with pytest.raises(ApiException) as caught:
        as_user.list_namespaced_config_map(namespace)
    assert caught.value.status == 403

    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "smoke-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "smoke-user"}],
        },
    )
    wait_until(lambda: _can_list(as_user, namespace), timeout=30)


def _can_list(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.list_namespaced_config_map(namespace)
        return True
    except ApiException as exc:
        if exc.status == 403:
            return False
        raise


def test_s3_refuses_overwrite_with_if_none_match_and_returns_exact_bytes(env: Environment, s3_prefix: str) -> None:
    s3 = env.s3()
    key = f"{s3_prefix}smoke/object.bin"
    payload = bytes(range(256)) * 4096
    s3.put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=payload, IfNoneMatch="*")
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=b"other bytes", IfNoneMatch="*")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=UPLOADS_BUCKET, Key=key)["Body"].read() == payload


def test_binaries_report_real_releases(env: Environment) -> None:
    pins = dict(
        line.split("=", 1)
        for line in (REPO / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    info = json.loads(env.kubectl("version", "-o", "json").stdout)
    assert info["clientVersion"]["gitVersion"] == f"v{pins['K8S_VERSION']}"
    assert info["serverVersion"]["gitVersion"] == f"v{pins['K8S_VERSION']}"
    etcd = subprocess.run([str(env.bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"etcd Version: {pins['ETCD_VERSION']}" in etcd
    gateway = subprocess.run([str(env.bin_dir / "versitygw"), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"v{pins['VERSITYGW_VERSION']}" in gateway
