"""Small helpers the end-to-end tests share: objects, waiting, bundles."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import tarfile
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "deploy.miosa.io", "v1alpha1"


def wait_until(predicate: Any, timeout: float = 60, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


class Objects:
    """Our custom resources in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create_deployment(self, name: str, kind: str = "static", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"kind": kind, **spec},
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "deployments", body)

    def create_version(self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DeploymentVersion",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "deploymentversions", body)

    def version(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "deploymentversions", name)

    def deployment(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "deployments", name)

    def status_once_claims_are_released(self, name: str, timeout: float = 30) -> dict[str, Any]:
        """The Deployment's status once no number claim is pending: recorded claims are released
        in batches, within ``MIOSA_CLAIM_RELEASE_DELAY`` (3 s) of their version's number."""

        def released() -> dict[str, Any] | None:
            status: dict[str, Any] = self.deployment(name).get("status") or {}
            return None if status.get("pendingNumbers") else status

        return wait_until(released, timeout=timeout, interval=0.2, what=f"the number claims on {name} released")

    def versions(self, label_selector: str = "") -> list[dict[str, Any]]:
        result = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "deploymentversions", label_selector=label_selector
        )
        return result["items"]

    def patch_version(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "deploymentversions", name, patch)

    def patch_version_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, "deploymentversions", name, {"status": status}
        )

    def create_versions_at_once(self, names: list[str], spec: dict[str, Any]) -> list[dict[str, Any]]:
        """``names`` created by 10 clients at once (racing for numbers), each once settled."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(lambda name: self.create_version(name, spec), names))
        return [self.wait_state(name, "ready", "failed", timeout=180) for name in names]

    def wait_state(self, name: str, *states: str, timeout: float = 90) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            try:
                obj = self.version(name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return obj if (obj.get("status") or {}).get("state") in states else None

        return wait_until(reached, timeout=timeout, what=f"version {name} in {states}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def static_spec(deployment: str, uri: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {"deploymentRef": {"name": deployment}, "kind": "static", "artifact": {"uri": uri, "sha256": digest}, **extra}


def dynamic_spec(deployment: str, **runtime: Any) -> dict[str, Any]:
    return {
        "deploymentRef": {"name": deployment},
        "kind": "dynamic",
        "runtime": {"image": "registry.example/app:1.0", "port": 8080, "healthCheckPath": "/healthz", **runtime},
    }
