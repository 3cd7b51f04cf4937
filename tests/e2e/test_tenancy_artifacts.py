"""Tenant pods read their own tenant's releases, nothing else, and never hold store credentials.

Two tenants (namespaces under Pod Security "restricted", driven through their write-scoped
ServiceAccount tokens) publish and promote static sites.  The operator renders the static
pods; the API server admits them under "restricted" (kwok then runs them in name only).
Then each pod's init container is run for real, as a kubelet would: its exact command and
environment, its volume mounts mapped to local directories, and in the projected token's
place a real token minted by ``kubectl create token --audience …`` for the namespace's
ServiceAccount, presented to the operator's artifact endpoint.  Nothing from the test
process's environment (which holds the S3 keys) reaches that process.

On a node that runs pods for real the same pods do all of this themselves; only
``MIOSA_ARTIFACTS_ADDR``/``MIOSA_ARTIFACTS_URL`` must then name an address the pods reach.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess, Tenant
from .helpers import Objects, sha256, static_spec, tar_gz, wait_until
from .slots import ARTIFACTS_PORT, WEBHOOK_PORT

AUDIENCE = "miosa-artifacts"
ENDPOINT = f"http://127.0.0.1:{ARTIFACTS_PORT}"


# ----------------------------------------------------------------------------- helpers


def publish(env: Environment, tenant: Tenant, name: str, bundle: bytes, suffix: str = "tar.gz") -> dict[str, Any]:
    """Upload a bundle under the tenant's prefix, create a Deployment and its version (as the
    tenant), wait until it is ready and promote it; returns the live apps/v1 Deployment."""
    key = f"{tenant.namespace}/{name}.{suffix}"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    objects = Objects(tenant.api, tenant.namespace)
    objects.create_deployment(name)
    objects.create_version(f"{name}-v1", static_spec(name, f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
    version = objects.wait_state(f"{name}-v1", "ready", "failed", timeout=180)
    assert version["status"]["state"] == "ready", version["status"]
    objects.custom.patch_namespaced_custom_object(
        "deploy.miosa.io", "v1alpha1", tenant.namespace, "deployments", name, {"spec": {"promotedVersion": f"{name}-v1"}}
    )

    def live() -> dict[str, Any] | None:
        deployment = objects.deployment(name)
        status = deployment.get("status") or {}
        return deployment if status.get("liveVersion") == f"{name}-v1" and not status.get("rollout") else None

    wait_until(live, timeout=120, what=f"{name}-v1 live")
    return version


def live_pod_spec(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    workload = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return api.sanitize_for_serialization(workload.spec.template.spec)  # type: ignore[no-any-return]


def mint_token(env: Environment, namespace: str, audience: str | None = AUDIENCE, account: str = "default") -> str:
    args = ["-n", namespace, "create", "token", account, "--duration=10m"]
    if audience:
        args.append(f"--audience={audience}")
    return env.kubectl(*args).stdout.strip()


def run_init_container(pod: dict[str, Any], token: str, root: Path) -> subprocess.CompletedProcess[str]:
    """The pod's ``fetch`` init container, run as a kubelet would: its command and env verbatim,
    each volume mounted (here: a local directory per mount path), the projected token written."""
    [fetch] = [c for c in pod["initContainers"] if c["name"] == "fetch"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in fetch["volumeMounts"]:
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        projected = volumes[mount["name"]].get("projected")
        if projected:
            [source] = projected["sources"]
            (local / source["serviceAccountToken"]["path"]).write_text(token)
        mounts[mount["mountPath"]] = local

    def mapped(value: str) -> str:
        for path, local in mounts.items():
            if value == path or value.startswith(path + "/"):
                return str(local) + value[len(path) :]
        return value

    command = [mapped(arg) for arg in fetch["command"]]
    assert command[0] == "miosa-operator"
    command[0] = str(Path(sys.executable).parent / "miosa-operator")  # the image's entrypoint
    environment = {e["name"]: mapped(e["value"]) for e in fetch["env"]}
    assert not any(key.startswith(("MIOSA_S3_", "AWS_")) for key in environment), environment
    image_env = {"PATH": os.environ["PATH"], "HOME": str(root), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, env={**image_env, **environment}, capture_output=True, text=True, timeout=300)


def fetched(root: Path) -> dict[str, bytes]:
    site = root / "site" / "site"
    return {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*") if p.is_file()}


def get(path: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(ENDPOINT + path, headers=headers), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def release_of(version: dict[str, Any]) -> str:
    status = version["status"]
    return f"/v1/releases/{version['metadata']['namespace']}/{status['deploymentId']}/{status['id']}"


def wait_for_operator() -> None:
    import socket

    def listening() -> bool:
        try:
            with urllib.request.urlopen(f"{ENDPOINT}/healthz", timeout=2):
                pass
            socket.create_connection(("127.0.0.1", WEBHOOK_PORT), timeout=2).close()
            return True
        except OSError:
            return False

    wait_until(listening, timeout=60, what="the operator's endpoints")


# ----------------------------------------------------------------------------- tests


@pytest.fixture
def two_tenants(tenants: Callable[..., Tenant], operator: OperatorProcess) -> tuple[Tenant, Tenant]:
    wait_for_operator()
    return tenants("a"), tenants("b")


def test_a_tenant_pod_reads_its_own_release_and_nothing_else(
    env: Environment, api: client.ApiClient, two_tenants: tuple[Tenant, Tenant], tmp_path: Path
) -> None:
    a, b = two_tenants
    site_a = {"index.html": b"<h1>tenant a</h1>", "app.3f9a1c2b.js": b"console.log('a')"}
    site_b = {"index.html": b"<h1>tenant b: private</h1>"}
    version_a = publish(env, a, "site", tar_gz(site_a))
    version_b = publish(env, b, "site", tar_gz(site_b))

    # The static pods passed Pod Security "restricted" (the API server admitted them) and
    # carry no credential: only the endpoint's URL, an audience-bound token and limits.
    pod_a, pod_b = live_pod_spec(api, a.namespace, "site"), live_pod_spec(api, b.namespace, "site")
    pods = client.CoreV1Api(api).list_namespaced_pod(a.namespace, label_selector="deploy.miosa.io/app=site").items
    assert pods, "no static pod was admitted in the restricted namespace"
    for pod in (pod_a, pod_b):
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod["initContainers"], *pod["containers"]]:
            assert "envFrom" not in container
            assert not any("S3" in e["name"] or "SECRET" in e["name"] for e in container.get("env") or [])

    # Tenant a's init container, with a's token: a's site.
    token_a, token_b = mint_token(env, a.namespace), mint_token(env, b.namespace)
    ran = run_init_container(pod_a, token_a, tmp_path / "a")
    assert ran.returncode == 0, ran.stderr
    assert fetched(tmp_path / "a") == site_a

    # Tenant b's pod template run with a's token: refused, with nothing of b's release shown.
    stolen = run_init_container(pod_b, token_a, tmp_path / "stolen")
    assert stolen.returncode == 4 and "404" in stolen.stderr, (stolen.stdout, stolen.stderr)
    assert not (tmp_path / "stolen" / "site" / "site").exists()
    assert b"tenant b" not in (stolen.stdout + stolen.stderr).encode()

    # Straight at the endpoint: b's release is, to a, exactly a release that does not exist.
    foreign = get(release_of(version_b), token_a)
    missing = get(release_of(version_a).replace(version_a["status"]["id"], "ver_" + "0" * 26), token_a)
    assert foreign == missing == (404, b"no such release\n")
    assert get(release_of(version_b), token_b)[0] == 200  # b itself can

    # Tokens for another audience (the API server's own) or none at all are refused.
    api_token = mint_token(env, a.namespace, audience=None)
    assert get(release_of(version_a), api_token)[0] == 401
    assert get(release_of(version_a), None)[0] == 401
    wrong_audience = run_init_container(pod_a, api_token, tmp_path / "wrong")
    assert wrong_audience.returncode == 4 and "401" in wrong_audience.stderr

    # A token minted for the endpoint is useless against the API server.
    whoami = subprocess.run(
        [str(env.bin_dir / "kubectl"), "--kubeconfig", "/dev/null", "--server", _server(env), "--certificate-authority",
         _ca(env), "--token", token_a, "get", "pods", "-n", a.namespace],
        capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )  # fmt: skip
    assert whoami.returncode != 0 and "must be logged in" in whoami.stderr, whoami  # 401 Unauthorized


@pytest.fixture
def file_store_operator(operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator with the chart's embedded default: releases on its own volume (file://),
    and limits of its own; restored afterwards."""
    volume = tmp_path_factory.mktemp("operator-volume")
    saved = dict(operator.extra_env)
    operator.extra_env.update(
        {
            "MIOSA_RELEASES_URI": f"file://{volume}/releases",
            "MIOSA_FILE_ROOT": str(volume),
            "MIOSA_MAX_FILE_BYTES": "50Mi",
            "MIOSA_MAX_TOTAL_BYTES": "51Mi",
            "MIOSA_MAX_MEMBERS": "50",
        }
    )
    operator.stop()
    operator.start()
    wait_for_operator()
    try:
        yield volume
    finally:
        operator.extra_env.clear()
        operator.extra_env.update(saved)
        operator.stop()
        operator.start()
        wait_for_operator()


def test_the_embedded_file_store_serves_the_most_compressible_bundle_ingestion_accepts(
    env: Environment,
    api: client.ApiClient,
    tenants: Callable[..., Tenant],
    file_store_operator: Path,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """A plain tar holding a 50 MiB file of zeros (the configured maximum): ingestion reads it
    uncompressed (no ratio to cap), the release is a few kilobytes of zstd, and the pod's fetch
    (with the operator's limits, not its defaults) must serve what ingestion accepted."""
    tenant = tenants("file")
    zeros = bytes(50 << 20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in {"index.html": b"<h1>zeros</h1>", "zeros.bin": zeros}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    version = publish(env, tenant, "zeros", buffer.getvalue(), suffix="tar")

    release = file_store_operator / "releases" / tenant.namespace / version["status"]["deploymentId"] / version["status"]["id"]
    assert version["status"]["artifactUri"] == f"file://{release}/dist.tar.zst"
    assert (release / "dist.tar.zst").stat().st_size < 1 << 20

    pod = live_pod_spec(api, tenant.namespace, "zeros")
    [fetch] = pod["initContainers"]
    variables = {e["name"]: e["value"] for e in fetch["env"]}
    assert (variables["MIOSA_MAX_FILE_BYTES"], variables["MIOSA_MAX_MEMBERS"]) == (str(50 << 20), "50")
    [site] = [v for v in pod["volumes"] if v["name"] == "site"]
    assert site["emptyDir"]["sizeLimit"] == f"{(2 * ((50 << 20) + 14 + 2 * 4096) + (16 << 20) + (1 << 20) - 1) >> 20}Mi"

    ran = run_init_container(pod, mint_token(env, tenant.namespace), tmp_path / "pod")
    assert ran.returncode == 0, ran.stderr
    files = fetched(tmp_path / "pod")
    assert files["index.html"] == b"<h1>zeros</h1>" and files["zeros.bin"] == zeros

    # A pod started after the operator was replaced (a node drain a week later) still gets
    # its release: it lives on the operator's volume, and the token is minted anew.
    operator.stop()
    operator.start()
    wait_for_operator()
    again = run_init_container(pod, mint_token(env, tenant.namespace), tmp_path / "later")
    assert again.returncode == 0, again.stderr
    assert fetched(tmp_path / "later")["zeros.bin"] == zeros


def _server(env: Environment) -> str:
    import re

    match = re.search(r"server: (\S+)", Path(env.kubeconfig).read_text())
    assert match
    return match.group(1)


def _ca(env: Environment) -> str:
    return str(Path(env.kubeconfig).parent / "pki" / "ca.crt")
