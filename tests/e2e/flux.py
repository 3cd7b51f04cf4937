"""Flux, for real: source-controller and kustomize-controller (built by hack/build-binaries.sh
from the Go module proxy) as local processes against the suite's API server, their CRDs
from the same modules, and a ``Bucket`` source on the suite's S3 server.

The controllers run with the administrator's kubeconfig, as Flux does in a cluster; each
Kustomization impersonates the tenant's ServiceAccount (``spec.serviceAccountName``), the
multi-tenant Flux setup, so everything it applies, prunes and health-checks goes through
the tenant's own permissions.  A "commit" is an upload of the repository's files to the
bucket (removed files deleted), then ``reconcile.fluxcd.io/requestedAt`` on the Bucket, as
``flux reconcile source bucket`` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .conftest import REPO, Environment
from .gitops import Repository
from .helpers import wait_until
from .slots import CACHE, SPARE_PORTS

BIN = CACHE / "bin"
GITOPS_BUCKET = "miosa-gitops"
HEALTH_CHECK_EXPRS = REPO / "integrations" / "flux" / "healthcheckexprs.yaml"
SOURCE, KUSTOMIZE = ("source.toolkit.fluxcd.io", "v1"), ("kustomize.toolkit.fluxcd.io", "v1")
STORAGE_PORT, SOURCE_HEALTH, KUSTOMIZE_HEALTH, SOURCE_METRICS, KUSTOMIZE_METRICS = SPARE_PORTS[90:95]


def _versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (REPO / "hack" / "versions.env").read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def crd_dir() -> Path:
    v = _versions()
    return CACHE / f"flux-crds-{v['FLUX_SOURCE_CONTROLLER_VERSION']}-{v['FLUX_KUSTOMIZE_CONTROLLER_VERSION']}"


@dataclass
class Controller:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    health_port: int

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _start(name: str, args: list[str], env: Environment, logs: Path, health_port: int) -> Controller:
    log = logs / f"{name}.log"
    proc = subprocess.Popen(
        [str(BIN / name), *args, f"--health-addr=127.0.0.1:{health_port}", "--log-level=debug"],
        env={**os.environ, "KUBECONFIG": env.kubeconfig, "RUNTIME_NAMESPACE": "flux-system"},
        stdout=open(log, "ab"),  # noqa: SIM115 - the controller process writes it until stopped
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Controller(name, proc, log, health_port)


@dataclass
class Flux:
    env: Environment
    api: client.ApiClient
    source: Controller
    kustomize: Controller

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def get(self, kind: tuple[str, str], plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(*kind, namespace, plural, name)

    def publish(self, repo: Repository) -> None:
        """The repository's files become the bucket's content under the tenant's prefix."""
        s3 = self.env.s3()
        prefix = f"{repo.namespace}/"
        files = repo.files()
        listed = s3.list_objects_v2(Bucket=GITOPS_BUCKET, Prefix=prefix).get("Contents") or []
        for stale in {o["Key"] for o in listed} - {prefix + name for name in files}:
            s3.delete_object(Bucket=GITOPS_BUCKET, Key=stale)
        for name, data in files.items():
            s3.put_object(Bucket=GITOPS_BUCKET, Key=prefix + name, Body=data)

    def set_up_tenant(self, namespace: str, service_account: str, name: str = "site") -> None:
        """What a platform team applies once per tenant: credentials, the Bucket, the Kustomization."""
        values = self.env.values
        core = client.CoreV1Api(self.api)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "gitops-bucket"},
                "stringData": {"accesskey": values["MIOSA_S3_ACCESS_KEY_ID"], "secretkey": values["MIOSA_S3_SECRET_ACCESS_KEY"]},
            },
        )
        endpoint = values["MIOSA_S3_ENDPOINT"].removeprefix("http://")
        bucket = {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "Bucket",
            "metadata": {"name": name},
            "spec": {
                "provider": "generic",
                "bucketName": GITOPS_BUCKET,
                "endpoint": endpoint,
                "insecure": True,
                "region": values.get("MIOSA_S3_REGION", "us-east-1"),
                "prefix": f"{namespace}/",
                "interval": "10m",
                "secretRef": {"name": "gitops-bucket"},
            },
        }
        kustomization = {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": name},
            "spec": {
                "interval": "10m",
                "retryInterval": "5s",
                "timeout": "3m",
                "sourceRef": {"kind": "Bucket", "name": name},
                "path": f"./{namespace}",
                "targetNamespace": namespace,
                "prune": True,
                "wait": True,
                "serviceAccountName": service_account,
                "healthCheckExprs": yaml.safe_load(HEALTH_CHECK_EXPRS.read_text()),
            },
        }
        self.custom.create_namespaced_custom_object(*SOURCE, namespace, "buckets", bucket)
        self.custom.create_namespaced_custom_object(*KUSTOMIZE, namespace, "kustomizations", kustomization)

    def reconcile(self, namespace: str, name: str = "site") -> None:
        """``flux reconcile source bucket NAME``: ask source-controller to fetch now."""
        stamp = datetime.now(UTC).isoformat()
        patch = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}}
        self.custom.patch_namespaced_custom_object(*SOURCE, namespace, "buckets", name, patch)

    def sync(self, namespace: str, name: str = "site") -> dict[str, Any]:
        """``flux reconcile kustomization NAME``: apply the current revision again (self-heal);
        the Kustomization's Ready condition once that sync is done."""
        stamp = datetime.now(UTC).isoformat()
        patch = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": stamp}}}
        self.custom.patch_namespaced_custom_object(*KUSTOMIZE, namespace, "kustomizations", name, patch)

        def handled() -> dict[str, Any] | None:
            status = self.kustomization(namespace, name).get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            return ready if status.get("lastHandledReconcileAt") == stamp and ready and ready["status"] == "True" else None

        return wait_until(handled, timeout=120, interval=1, what=f"Kustomization {name} synced again")

    def artifact_revision(self, namespace: str, previous: str | None, name: str = "site") -> str:
        """The Bucket's artifact revision once it differs from ``previous``."""

        def fetched() -> str | None:
            artifact = (self.get(SOURCE, "buckets", namespace, name).get("status") or {}).get("artifact") or {}
            revision = artifact.get("revision")
            return revision if revision and revision != previous else None

        return wait_until(fetched, timeout=120, interval=1, what=f"a new artifact of bucket {name}")

    def kustomization(self, namespace: str, name: str = "site") -> dict[str, Any]:
        return self.get(KUSTOMIZE, "kustomizations", namespace, name)

    def wait_applied(self, namespace: str, revision: str, *, ready: str, timeout: float = 240) -> dict[str, Any]:
        """The Kustomization's Ready condition for ``revision`` once it is ``ready`` (True/False)."""

        def settled() -> dict[str, Any] | None:
            status = self.kustomization(namespace).get("status") or {}
            field = "lastAppliedRevision" if ready == "True" else "lastAttemptedRevision"
            if status.get(field) != revision:
                return None
            condition = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            return condition if condition and condition["status"] == ready else None

        try:
            return wait_until(settled, timeout=timeout, interval=1, what=f"Kustomization Ready={ready} at {revision}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nstatus: {self.kustomization(namespace).get('status')}\n{self.kustomize.tail(6)}"
            ) from None


@pytest.fixture(scope="session", name="flux")
def flux_controllers(env: Environment, api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    crds = crd_dir()
    assert (crds / ".done").exists(), f"Flux CRDs missing in {crds}: run hack/build-binaries.sh"
    env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    env.kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        "buckets.source.toolkit.fluxcd.io",
        "kustomizations.kustomize.toolkit.fluxcd.io",
        "--timeout=60s",
    )
    env.kubectl("create", "namespace", "flux-system", check=False)
    try:
        env.s3().create_bucket(Bucket=GITOPS_BUCKET)
    except Exception as exc:  # already there from an earlier session on a reused environment
        if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
            raise
    logs = Path(os.environ.get("MIOSA_E2E_LOG_DIR") or tmp_path_factory.mktemp("flux"))
    storage = tmp_path_factory.mktemp("flux-storage")
    source = _start(
        "source-controller",
        [
            f"--storage-path={storage}",
            f"--storage-addr=127.0.0.1:{STORAGE_PORT}",
            f"--storage-adv-addr=127.0.0.1:{STORAGE_PORT}",
            f"--metrics-addr=127.0.0.1:{SOURCE_METRICS}",
        ],
        env,
        logs,
        SOURCE_HEALTH,
    )
    kustomize = _start("kustomize-controller", [f"--metrics-addr=127.0.0.1:{KUSTOMIZE_METRICS}"], env, logs, KUSTOMIZE_HEALTH)
    try:
        for controller in (source, kustomize):
            wait_until(controller.ready, timeout=120, interval=1, what=f"{controller.name} ready")
        yield Flux(env, api, source, kustomize)
    finally:
        for controller in (kustomize, source):
            controller.stop()
