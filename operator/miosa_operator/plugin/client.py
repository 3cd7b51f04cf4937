"""The plugin's gateway to the cluster: our custom objects, with failures as ``PluginError``.

Design decisions:

* Requests go through ``apiclient`` (standard library HTTPS) with the kubeconfig resolved by
  ``kubeconfig``, like kubectl: ``--kubeconfig``/``--context``, ``$KUBECONFIG`` lists, and
  ``-n`` defaulting to the context's namespace, else ``default``.
* Every call names its ``Request`` (verb, resource, name) so that failures become a
  ``PluginError`` with the right exit code and a message about what the user asked for.
* Bounded time: each request has a connect and a read timeout, and nothing is retried
  (a PATCH is not ours to repeat), so an unreachable server is reported in seconds.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any

from ..api import meta
from ..api.types import Obj
from .apiclient import MERGE_PATCH, ApiClient, ApiStatus
from .errors import ExitCode, PluginError, Request, from_api_status, from_transport_error
from .kubeconfig import KubeconfigError, default_namespace, load

CONNECT_TIMEOUT = 10.0

__all__ = ["Cluster", "default_namespace"]


def _path(plural: str, namespace: str, name: str | None = None) -> str:
    path = f"/apis/{meta.GROUP}/{meta.VERSION}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class Cluster:
    """Our custom resources in one namespace, with failures as ``PluginError``."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None, request_timeout: float) -> Cluster:
        try:
            endpoint = load(kubeconfig, context)
        except KubeconfigError as exc:
            raise PluginError(f"cannot load kubeconfig: {exc}", ExitCode.REFUSED) from exc
        api = ApiClient(endpoint, timeout=request_timeout, connect_timeout=min(CONNECT_TIMEOUT, request_timeout))
        return cls(api, namespace or endpoint.namespace)

    @property
    def server(self) -> str:
        return self.api.server

    # ------------------------------------------------------------------ reads
    def get_version(self, name: str) -> Obj:
        return self._get(meta.VERSION_PLURAL, name)

    def get_deployment(self, name: str) -> Obj:
        return self._get(meta.DEPLOYMENT_PLURAL, name)

    def list_versions(self, label_selector: str, field_selector: str = "") -> list[Obj]:
        return self._list(meta.VERSION_PLURAL, label_selector, field_selector)

    def list_deployments(self) -> list[Obj]:
        return self._list(meta.DEPLOYMENT_PLURAL)

    def watch_deployment(self, name: str, resource_version: str, timeout: float) -> Iterator[Obj]:
        """The Deployment's bodies as they change after ``resource_version``, until ``timeout``
        (the server may end a watch early; the caller watches again)."""
        request = Request("watch", meta.DEPLOYMENT_PLURAL, self.namespace, name)
        query = {"fieldSelector": f"metadata.name={name}", "resourceVersion": resource_version, "allowWatchBookmarks": "false"}
        events = self._call(request, lambda: self.api.watch(_path(meta.DEPLOYMENT_PLURAL, self.namespace), query, timeout))
        try:
            for event in events:
                if event.get("type") == "ERROR":  # e.g. 410 Gone: the resourceVersion is too old
                    return
                yield event.get("object") or {}
        except ApiStatus as exc:
            raise from_api_status(exc, request, self.server) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise from_transport_error(exc, self.server) from exc

    # ------------------------------------------------------------------ writes
    def patch_deployment(self, name: str, patch: Obj) -> Obj:
        """JSON merge patch: ``None`` removes a key (e.g. a stale change-cause annotation)."""
        request = Request("patch", meta.DEPLOYMENT_PLURAL, self.namespace, name)
        path = _path(meta.DEPLOYMENT_PLURAL, self.namespace, name)
        return self._call(request, lambda: self.api.request("PATCH", path, body=patch, content_type=MERGE_PATCH))

    # ------------------------------------------------------------------ plumbing
    def _get(self, plural: str, name: str) -> Obj:
        request = Request("get", plural, self.namespace, name)
        return self._call(request, lambda: self.api.request("GET", _path(plural, self.namespace, name)))

    def _list(self, plural: str, label_selector: str = "", field_selector: str = "") -> list[Obj]:
        request = Request("list", plural, self.namespace)
        query = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        result = self._call(request, lambda: self.api.request("GET", _path(plural, self.namespace), query=query))
        return list(result.get("items") or [])

    def _call(self, request: Request, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ApiStatus as exc:
            raise from_api_status(exc, request, self.server) from exc
        except KubeconfigError as exc:
            raise PluginError(f"cannot authenticate: {exc}", ExitCode.REFUSED) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise from_transport_error(exc, self.server) from exc
