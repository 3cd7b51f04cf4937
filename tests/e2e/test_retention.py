"""Retention and garbage collection against the real cluster and S3, with a moved clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import OPERATOR_ENV, Environment, OperatorProcess
from .helpers import GROUP, VERSION, Objects, condition
from .test_promotion import promote, static_versions, wait_live


@pytest.fixture
def objects(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> Objects:
    return Objects(api, namespace)


def gc(env: Environment, namespace: str, days: int, *, dry_run: bool) -> dict[str, Any]:
    """`miosa-operator gc` as if it ran ``days`` from now."""
    now = (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = [sys.executable, "-m", "miosa_operator", "gc", "-n", namespace, "--now", now, "-o", "json"]
    if dry_run:
        command.append("--dry-run")
    result = subprocess.run(
        command, env={**os.environ, **env.values, **OPERATOR_ENV}, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout)


def collected(report: dict[str, Any]) -> list[str]:
    return sorted(row["name"] for row in report["collected"])


def s3_exists(env: Environment, uri: str) -> bool:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bool(env.s3().list_objects_v2(Bucket=bucket, Prefix=key).get("Contents"))


def test_collector_honours_live_window_retain_and_tenant_policy(
    env: Environment, api: client.ApiClient, objects: Objects, namespace: str, s3_prefix: str
) -> None:
    objects.create_deployment("site")
    v1, v2, v3, v4, v5 = static_versions(env, objects, s3_prefix, "site", 5)
    for version in (v1, v2, v3, v4):
        promote(objects, "site", version)
        wait_live(objects, "site", version)
    objects.patch_version(v2, {"metadata": {"annotations": {"deploy.miosa.io/retain": "true"}}})

    # Operator default: 30 days, rollback window 5 (v1..v4 were all live).
    assert collected(gc(env, namespace, 11, dry_run=True)) == []
    assert collected(gc(env, namespace, 31, dry_run=True)) == [v5]

    # The tenant's own policy overrides the default.
    policy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RetentionPolicy",
        "metadata": {"name": "default"},
        "spec": {"retainDays": 10, "rollbackWindow": 2},
    }
    objects.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "retentionpolicies", policy)
    dry = gc(env, namespace, 11, dry_run=True)
    assert collected(dry) == [v1, v5]
    assert dry["kept"]["live"] == 1 and dry["kept"]["rollback window"] == 1 and dry["kept"]["retain annotation"] == 1
    assert all(s3_exists(env, objects.version(v)["status"]["artifactUri"]) for v in (v1, v5)), "dry run deleted nothing"

    report = gc(env, namespace, 11, dry_run=False)
    assert collected(report) == [v1, v5]
    # Three lists, a fresh look at the Deployment; per version the claim, the status write and
    # an event; and the RetentionPolicy's status.
    assert report["apiCalls"] <= 3 + 1 + 2 * 3 + 1
    for name in (v1, v5):
        version = objects.version(name)
        status = version["status"]
        assert status["artifactsCollectedAt"] and status["state"] in ("ready", "archived")
        assert condition(version, "Ready")["reason"] == "ArtifactsCollected"
        assert not s3_exists(env, status["artifactUri"])
        assert s3_exists(env, status["buildLogUri"]), "build logs are kept by default"
    for name in (v2, v3, v4):
        assert s3_exists(env, objects.version(name)["status"]["artifactUri"])
        assert not objects.version(name)["status"].get("artifactsCollectedAt")

    with pytest.raises(ApiException) as caught:
        promote(objects, "site", v1)
    assert caught.value.status == 422 and "garbage-collected" in caught.value.body
    assert collected(gc(env, namespace, 11, dry_run=False)) == []  # nothing twice


def test_retention_policy_must_be_named_default(objects: Objects, namespace: str) -> None:
    policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RetentionPolicy", "metadata": {"name": "other"}, "spec": {}}
    with pytest.raises(ApiException) as caught:
        objects.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "retentionpolicies", policy)
    assert caught.value.status == 422 and "must be named 'default'" in caught.value.body
