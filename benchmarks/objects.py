"""Creating and changing our custom resources from the benchmark."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

GROUP, VERSION = "deploy.miosa.io", "v1alpha1"
MERGE = "application/merge-patch+json"


class Objects:
    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.namespace = namespace

    def create_deployment(self, name: str, kind: str = "static", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"kind": kind, **spec},
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "deployments", body)

    def create_version(
        self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if labels:
            metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeploymentVersion", "metadata": metadata, "spec": spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "deploymentversions", body)

    def version(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "deploymentversions", name)

    def deployment(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "deployments", name)

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "deployments", name, patch, _content_type=MERGE
        )

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, plural, name, {"status": status}, _content_type=MERGE
        )

    def list_versions(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "deploymentversions", limit=2000, _continue=token, **kwargs
            )
            items += page["items"]
            token = page["metadata"].get("continue")
            if not token:
                return items


def static_spec(deployment: str, uri: str, sha256: str, **extra: Any) -> dict[str, Any]:
    return {"deploymentRef": {"name": deployment}, "kind": "static", "artifact": {"uri": uri, "sha256": sha256}, **extra}


def dynamic_spec(deployment: str, image: str = "registry.example/app:1.0") -> dict[str, Any]:
    return {
        "deploymentRef": {"name": deployment},
        "kind": "dynamic",
        "runtime": {"image": image, "port": 8080, "healthCheckPath": "/healthz"},
    }


def parallel(fn: Any, items: list[Any], workers: int) -> list[Any]:
    """``fn`` over ``items`` with a thread pool; the first error is raised."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))
