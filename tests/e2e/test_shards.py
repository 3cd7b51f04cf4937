"""The operator as two shards: two real operator processes against the real API server.

The API server filters each shard's list and watch by uid hash (feature gate
ShardedListAndWatch, on in hack/env.sh).  Who handled a version is read from the API
server's own record: every status write names its writer in managedFields
("miosa-operator-shard-<i>", from the shard's User-Agent), and each shard's log counts the
handler runs that finished.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from miosa_operator.sharding import Shard

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess
from .helpers import Objects, sha256, static_spec, tar_gz, wait_until
from .slots import SPARE_PORTS

SITE = {"index.html": b"<h1>sharded</h1>"}
SHARDS = 2
SUCCEEDED = "Handler 'version_lifecycle' succeeded."


def grant_leases(api: client.ApiClient, namespace: str) -> None:
    """The chart's Role for shards (templates/rbac.yaml, shards > 1), here in the test namespace."""
    rbac = client.RbacAuthorizationV1Api(api)
    rules = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "create", "update"]}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "miosa-operator-leases"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "miosa-operator-leases"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "miosa-operator-leases"},
            "subjects": [{"kind": "ServiceAccount", "name": "miosa-operator", "namespace": "miosa-system"}],
        },
    )


@pytest.fixture
def shards(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> Iterator[list[OperatorProcess]]:
    """Two shards watching only this test's namespace, as the operator's ServiceAccount; the
    suite's operator is stopped meanwhile (it would handle every version itself)."""
    grant_leases(api, namespace)
    operator.stop()
    processes = []
    try:
        for index in range(SHARDS):
            process = shard_process(
                env,
                tmp_path / f"shard-{index}.log",
                namespace,
                {
                    "KUBECONFIG": operator.extra_env["KUBECONFIG"],
                    "MIOSA_SHARDS": str(SHARDS),
                    "MIOSA_SHARD_INDEX": str(index),
                    "MIOSA_LEASE_NAMESPACE": namespace,
                    "MIOSA_LEASE_SECONDS": "6",
                    "MIOSA_WEBHOOK": "off",
                    "MIOSA_GC_INTERVAL": "0",
                    "MIOSA_ARTIFACTS_PORT": str(SPARE_PORTS[10 + index]),
                    "MIOSA_METRICS_PORT": str(SPARE_PORTS[20 + index]),
                },
            )
            process.start()
            processes.append(process)
        for process in processes:
            wait_until(
                lambda p=process: "miosa-operator configured" in p.log_path.read_text(errors="replace"),
                timeout=90,
                what=f"{process.log_path.name} to join its shard",
            )
        yield processes
    finally:
        for process in processes:
            process.stop()
        operator.start()
        operator.wait_ready()


def shard_process(env: Environment, log_path: Path, namespace: str, extra_env: dict[str, str]) -> OperatorProcess:
    """``miosa-operator run --standalone -n NAMESPACE``: no other test's versions."""
    return OperatorProcess(env, log_path, extra_env=extra_env, extra_args=["-n", namespace])


def status_writers(version: dict) -> set[str]:
    return {
        entry["manager"]
        for entry in version["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status" and entry["manager"].startswith("miosa-operator")
    }


def test_two_shards_split_thirty_concurrent_versions_without_handling_one_twice(
    env: Environment, api: client.ApiClient, namespace: str, shards: list[OperatorProcess]
) -> None:
    objects = Objects(api, namespace)
    bundle = tar_gz(SITE)
    key = f"{namespace}/site.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    uri = f"s3://{UPLOADS_BUCKET}/{key}"
    objects.create_deployment("busy")
    versions = objects.create_versions_at_once([f"busy-{i:02d}" for i in range(30)], static_spec("busy", uri, sha256(bundle)))
    assert {v["status"]["state"] for v in versions} == {"ready"}

    # Numbers stay unique and gapless with claims from two processes.
    assert sorted(v["status"]["versionNumber"] for v in versions) == list(range(1, 31))
    assert objects.status_once_claims_are_released("busy")["lastVersionNumber"] == 30

    # Each version was written by exactly one shard: the one its uid hashes to.
    handled_by = {index: 0 for index in range(SHARDS)}
    for version in versions:
        owner = next(i for i in range(SHARDS) if Shard(i, SHARDS).owns(version["metadata"]["uid"]))
        assert status_writers(version) == {f"miosa-operator-shard-{owner}"}, version["metadata"]["name"]
        handled_by[owner] += 1
    assert all(handled_by.values()), f"the 30 versions were not split across the shards: {handled_by}"

    # ... and ran its handler to the end once, in that shard only.
    time.sleep(1)
    finished = [p.log_path.read_text(errors="replace").count(SUCCEEDED) for p in shards]
    assert finished == [handled_by[i] for i in range(SHARDS)], (finished, handled_by)
    for process in shards:
        assert "holding Lease" in process.log_path.read_text(errors="replace")
        assert process.proc is not None and process.proc.poll() is None, process.tail()


def test_a_shard_refuses_to_start_twice(env: Environment, namespace: str, shards: list[OperatorProcess], tmp_path: Path) -> None:
    """A second process for shard 0 waits for the Lease instead of handling shard 0 as well."""
    twin_env = {
        **shards[0].extra_env,
        "MIOSA_ARTIFACTS_PORT": str(SPARE_PORTS[10 + SHARDS]),
        "MIOSA_METRICS_PORT": str(SPARE_PORTS[20 + SHARDS]),
    }
    twin = shard_process(env, tmp_path / "twin.log", namespace, twin_env)
    twin.start()
    try:
        wait_until(
            lambda: "waiting for Lease" in twin.log_path.read_text(errors="replace"),
            timeout=60,
            what=f"the second shard 0 to wait:\n{twin.tail()}",
        )
        assert "miosa-operator configured" not in twin.log_path.read_text(errors="replace")
        # Its predecessor stops: the Lease is released and the twin takes over.
        shards[0].stop()
        wait_until(
            lambda: "miosa-operator configured" in twin.log_path.read_text(errors="replace"),
            timeout=60,
            what="the twin to take shard 0 over",
        )
    finally:
        twin.stop()
