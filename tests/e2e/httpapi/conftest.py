"""The HTTP API end to end: the real ``miosa-operator api`` process in front of the real cluster.

* The API runs as a child process under a ServiceAccount of its own with exactly the RBAC the
  chart packages for it (``manifests/components/api``: TokenReview, SubjectAccessReview, list
  of Deployments), so the suite proves those permissions suffice.  It listens on one of the
  slot's spare ports and stores published bundles in the environment's real S3 server.
* Callers are real ServiceAccounts of the test's tenant namespace bound to the product's
  ClusterRoles (``miosa-deployments-read`` / ``-write``) with RoleBindings, using real bound
  tokens from ``kubectl create token``: no mocks anywhere.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ..conftest import REPO, UPLOADS_BUCKET, Environment, OperatorProcess, service_account_kubeconfig
from ..helpers import Objects, sha256, static_spec, tar_gz, wait_until
from ..slots import SPARE_PORTS

API_NAMESPACE = "miosa-system"
API_ACCOUNT = "miosa-operator-api"
ARTIFACTS = Path(os.environ.get("MIOSA_E2E_ARTIFACTS", REPO / "test-artifacts"))


def free_port() -> int:
    # Its own part of the slot's spare ports (tests/e2e/slots.py says whose the others are).
    for port in SPARE_PORTS[40:90]:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no spare port free in this slot")


@dataclass
class ApiProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def api_kubeconfig(env: Environment, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The API's own identity with the packaged RBAC (only the identity documents of the component)."""
    documents = yaml.safe_load_all((REPO / "manifests" / "components" / "api" / "api.yaml").read_text())
    identity = [d for d in documents if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    assert {d["kind"] for d in identity} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(identity))
    return service_account_kubeconfig(env, API_NAMESPACE, API_ACCOUNT, tmp_path_factory.mktemp("api-identity"))


@pytest.fixture(scope="session")
def api_server(
    env: Environment, api_kubeconfig: Path, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    exe = Path(sys.executable).parent / "miosa-operator"
    environment = {
        **os.environ,
        **env.values,
        "KUBECONFIG": str(api_kubeconfig),
        "MIOSA_API_PORT": str(port),
        "MIOSA_API_UPLOADS_URI": f"s3://{UPLOADS_BUCKET}",
        "MIOSA_API_MAX_BUNDLE_BYTES": str(8 * 1024 * 1024),
        "MIOSA_API_AUTH_CACHE_SECONDS": "2",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(exe), "api"], env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = ApiProcess(f"http://127.0.0.1:{port}", proc, log_path)

    def ready() -> bool:
        assert proc.poll() is None, server.log()
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_until(ready, timeout=60, interval=0.2, what="the API process to be ready")
    yield server
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
    if os.environ.get("CI"):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "api.log").write_text(server.log())


@dataclass
class ApiTenant:
    """A tenant namespace with a read and a write ServiceAccount and their bound tokens."""

    namespace: str
    objects: Objects
    read_token: str
    write_token: str

    @property
    def writer(self) -> str:
        return f"system:serviceaccount:{self.namespace}:writer"


def make_tenant(env: Environment, api: client.ApiClient, namespace: str) -> ApiTenant:
    tokens = {}
    for account, role in (("reader", "miosa-deployments-read"), ("writer", "miosa-deployments-write")):
        env.kubectl("-n", namespace, "create", "serviceaccount", account)
        env.kubectl(
            "-n", namespace, "create", "rolebinding", account, f"--clusterrole={role}", f"--serviceaccount={namespace}:{account}"
        )
        tokens[account] = env.kubectl("-n", namespace, "create", "token", account, "--duration=2h").stdout.strip()
    return ApiTenant(namespace, Objects(api, namespace), tokens["reader"], tokens["writer"])


@pytest.fixture
def tenant(env: Environment, api: client.ApiClient, namespace: str, api_server: ApiProcess) -> ApiTenant:
    return make_tenant(env, api, namespace)


def upload_static(env: Environment, tenant: ApiTenant, deployment: str, name: str, *, good: bool = True, **spec: Any) -> str:
    """Upload a small bundle under the tenant's prefix and create a static version (not waiting)."""
    bundle = tar_gz({"index.html": f"<h1>{name}</h1>".encode()})
    key = f"{tenant.namespace}/{name}.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    digest = sha256(bundle) if good else "0" * 64
    tenant.objects.create_version(name, static_spec(deployment, f"s3://{UPLOADS_BUCKET}/{key}", digest, **spec))
    return name


def deployment_id(tenant: ApiTenant, name: str) -> str:
    return wait_until(lambda: (tenant.objects.deployment(name).get("status") or {}).get("id"), what=f"{name} has an id")


def version_id(tenant: ApiTenant, name: str, *states: str) -> str:
    return tenant.objects.wait_state(name, *(states or ("ready",)))["status"]["id"]
