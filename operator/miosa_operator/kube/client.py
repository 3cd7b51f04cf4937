"""A thin, typed gateway over the official Kubernetes client.

Controllers depend on ``Kube`` and never on ``kubernetes.client`` directly, so (1) API errors
arrive as three meaningful exceptions (``NotFound``, ``Conflict``, ``TransientApiError``)
instead of status codes, and (2) unit tests can hand a controller a fake gateway.

Patches are JSON merge patches: a status write names only the fields it sets.  Passing
``resource_version`` turns a patch into a compare-and-swap (the API server answers 409 when
the object moved), which is how version numbers are claimed without locks.

**Every request is bounded in time** (``Timeouts``: connect and read, from settings).  The
official client waits for ever by default: one half-open connection (a dropped NAT entry, a
load balancer that forgot us) then hangs a worker thread for good while the liveness probe
stays green.  A timed-out call is a ``TransientApiError``: retried with backoff, never blamed
on a version.

Controllers are typed against ``KubeApi``, the Protocol of the calls they make; ``Kube``
and the unit tests' API-server fake (``tests/unit/fakes.FakeKube``) both satisfy it, and
mypy checks that they do.  ``ClusterApi`` adds what only the process wiring needs (events
posted outside kopf, namespaces, the webhook configuration, the raw client).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import meta
from ..api.types import Obj
from .timeouts import Timeouts

log = logging.getLogger(__name__)

# RFC 7386: lists are replaced whole, so a removed env var or container really goes away
# (a strategic merge would keep it).
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeApi(Protocol):
    """The requests the controllers make: our custom objects and the objects they render."""

    @property
    def calls(self) -> int | Sequence[Any]:
        """Requests made so far (a count; an API-server fake may keep the calls themselves)."""
        ...

    def get(self, plural: str, namespace: str, name: str) -> Obj | None: ...
    def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> builtins.list[Obj]: ...
    def patch(self, plural: str, namespace: str, name: str, patch: Obj, resource_version: str | None = None) -> Obj: ...
    def patch_status(self, plural: str, namespace: str, name: str, status: Obj, resource_version: str | None = None) -> Obj: ...
    def get_workload(self, namespace: str, name: str) -> Obj | None: ...
    def create_workload(self, namespace: str, body: Obj) -> Obj: ...
    def patch_workload(self, namespace: str, name: str, patch: Obj) -> Obj: ...
    def delete_workload(self, namespace: str, name: str) -> bool: ...
    def get_service(self, namespace: str, name: str) -> Obj | None: ...
    def create_service(self, namespace: str, body: Obj) -> Obj: ...
    def patch_service(self, namespace: str, name: str, patch: Obj) -> Obj: ...
    def get_object(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def create_object(self, kind: str, namespace: str, body: Obj) -> Obj: ...
    def replace_object(self, kind: str, namespace: str, name: str, body: Obj) -> Obj: ...
    def patch_object(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj: ...
    def delete_object(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool: ...
    def list_pods(self, namespace: str, label_selector: str) -> builtins.list[Obj]: ...
    def list_events(self, namespace: str, field_selector: str, limit: int = 100) -> builtins.list[Obj]: ...


class Namespaces(Protocol):
    def namespace_names(self) -> set[str]: ...
    def namespace_exists(self, name: str) -> bool: ...


class WebhookConfigurations(Protocol):
    def get_webhook_configuration(self, name: str) -> Obj | None: ...
    def patch_webhook_configuration(self, name: str, patch: builtins.list[Obj], resource_version: str | None = None) -> Obj: ...


class EventWriter(Protocol):
    def create_event(self, namespace: str, body: Obj) -> Obj: ...


class ClusterApi(KubeApi, Namespaces, WebhookConfigurations, EventWriter, Protocol):
    """Everything ``Kube`` offers: what the process wiring (handlers, cli) hands around."""

    @property
    def api_client(self) -> client.ApiClient: ...
    @property
    def timeouts(self) -> Timeouts: ...
    def list_pages(
        self, plural: str, *, field_selector: str = "", shard_selector: str = "", limit: int = 500
    ) -> Iterator[Obj]: ...


class ApiError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ApiError): ...


class Conflict(ApiError): ...


class TransientApiError(ApiError):
    """Timeouts, 5xx, 429, connection errors: retry with backoff, never fail a version."""


def _translate(exc: Exception) -> ApiError:
    if isinstance(exc, ApiException):
        status = exc.status or 0
        message = f"{exc.status} {exc.reason}: {exc.body!r}"[:2000]
        if status == 404:
            return NotFound(message, status)
        if status == 409:
            return Conflict(message, status)
        if status == 429 or status >= 500 or status == 0:
            return TransientApiError(message, status)
        return ApiError(message, status)
    return TransientApiError(f"{type(exc).__name__}: {exc}")


def load_api_client(pool_size: int = 32) -> client.ApiClient:
    """In-cluster config when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        # The client computes its default path at import time; read $KUBECONFIG now instead.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    cfg.retries = urllib3.Retry(total=3, connect=3, read=0, backoff_factor=0.2, allowed_methods=None, status=0)
    return client.ApiClient(cfg)


class Kube:
    """Gateway for our custom resources and the built-in objects the operator renders."""

    def __init__(self, api_client: client.ApiClient, timeouts: Timeouts = Timeouts()) -> None:
        self.api_client = api_client
        self.timeouts = timeouts
        self.calls = 0  # requests made, for benchmarks and the collector's report
        self._calls_lock = threading.Lock()
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)

    @classmethod
    def from_environment(cls, timeouts: Timeouts = Timeouts(), pool_size: int = 32) -> Kube:
        return cls(load_api_client(pool_size), timeouts)

    # -------------------------------------------------------------- custom objects
    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        try:
            found: Obj = self._call(self.custom.get_namespaced_custom_object, meta.GROUP, meta.VERSION, namespace, plural, name)
            return found
        except NotFound:
            return None

    def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> builtins.list[Obj]:
        kwargs = {"label_selector": label_selector, "field_selector": field_selector}
        if namespace:
            result = self._call(self.custom.list_namespaced_custom_object, meta.GROUP, meta.VERSION, namespace, plural, **kwargs)
        else:
            result = self._call(self.custom.list_cluster_custom_object, meta.GROUP, meta.VERSION, plural, **kwargs)
        return list(result.get("items", []))

    def list_pages(self, plural: str, *, field_selector: str = "", shard_selector: str = "", limit: int = 500) -> Iterator[Obj]:
        """Every object cluster-wide, ``limit`` per request, so no LIST is parsed whole; the
        shard selector (``sharding``) is not a parameter the generated client knows."""
        path = f"/apis/{meta.GROUP}/{meta.VERSION}/{plural}"
        token = ""
        while True:
            query = [("limit", str(limit))]
            query += [
                (k, v)
                for k, v in (("fieldSelector", field_selector), ("shardSelector", shard_selector), ("continue", token))
                if v
            ]
            response = self._call(
                self.api_client.call_api,
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
            )
            page = json.loads(response.data)
            yield from page.get("items", [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def patch(self, plural: str, namespace: str, name: str, patch: Obj, resource_version: str | None = None) -> Obj:
        body = _with_precondition(patch, resource_version)
        patched: Obj = self._call(
            self.custom.patch_namespaced_custom_object,
            meta.GROUP,
            meta.VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type=MERGE_PATCH,
        )
        return patched

    def patch_status(self, plural: str, namespace: str, name: str, status: Obj, resource_version: str | None = None) -> Obj:
        body = _with_precondition({"status": status}, resource_version)
        patched: Obj = self._call(
            self.custom.patch_namespaced_custom_object_status,
            meta.GROUP,
            meta.VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type=MERGE_PATCH,
        )
        return patched

    # -------------------------------------------------------------- apps/v1 and core/v1
    def get_workload(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._sanitize(self._call(self.apps.read_namespaced_deployment, name, namespace))
        except NotFound:
            return None

    def create_workload(self, namespace: str, body: Obj) -> Obj:
        return self._sanitize(self._call(self.apps.create_namespaced_deployment, namespace, body))

    def patch_workload(self, namespace: str, name: str, patch: Obj) -> Obj:
        return self._sanitize(
            self._call(self.apps.patch_namespaced_deployment, name, namespace, patch, _content_type=MERGE_PATCH)
        )

    def delete_workload(self, namespace: str, name: str) -> bool:
        try:
            self._call(self.apps.delete_namespaced_deployment, name, namespace, propagation_policy="Background")
            return True
        except NotFound:
            return False

    def get_service(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._sanitize(self._call(self.core.read_namespaced_service, name, namespace))
        except NotFound:
            return None

    def create_service(self, namespace: str, body: Obj) -> Obj:
        return self._sanitize(self._call(self.core.create_namespaced_service, namespace, body))

    def patch_service(self, namespace: str, name: str, patch: Obj) -> Obj:
        return self._sanitize(self._call(self.core.patch_namespaced_service, name, namespace, patch, _content_type=MERGE_PATCH))

    # -------------------------------------------------------------- objects the operator owns, by kind
    # ("Deployment" = apps/v1, "Service" = v1, "PodDisruptionBudget" = policy/v1)
    def _verbs(self, kind: str) -> tuple[Any, Any, Any, Any, Any]:
        """read, create, replace, patch and delete of ``kind``."""
        if kind == "Deployment":
            a = self.apps
            return (
                a.read_namespaced_deployment,
                a.create_namespaced_deployment,
                a.replace_namespaced_deployment,
                a.patch_namespaced_deployment,
                a.delete_namespaced_deployment,
            )
        if kind == "Service":
            c = self.core
            return (
                c.read_namespaced_service,
                c.create_namespaced_service,
                c.replace_namespaced_service,
                c.patch_namespaced_service,
                c.delete_namespaced_service,
            )
        if kind == "PodDisruptionBudget":
            p = self.policy
            return (
                p.read_namespaced_pod_disruption_budget,
                p.create_namespaced_pod_disruption_budget,
                p.replace_namespaced_pod_disruption_budget,
                p.patch_namespaced_pod_disruption_budget,
                p.delete_namespaced_pod_disruption_budget,
            )
        raise ValueError(f"not a kind the operator manages: {kind}")

    def get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return self._sanitize(self._call(self._verbs(kind)[0], name, namespace))
        except NotFound:
            return None

    def create_object(self, kind: str, namespace: str, body: Obj) -> Obj:
        return self._sanitize(self._call(self._verbs(kind)[1], namespace, body))

    def replace_object(self, kind: str, namespace: str, name: str, body: Obj) -> Obj:
        """PUT: the whole object as given (``metadata.resourceVersion`` makes it a compare-and-swap)."""
        return self._sanitize(self._call(self._verbs(kind)[2], name, namespace, body))

    def patch_object(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        return self._sanitize(self._call(self._verbs(kind)[3], name, namespace, patch, _content_type=MERGE_PATCH))

    def delete_object(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete (in the background); with ``uid``, only that very object (else ``Conflict``)."""
        options = client.V1DeleteOptions(
            propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            self._call(self._verbs(kind)[4], name, namespace, body=options)
            return True
        except NotFound:
            return False

    def list_pods(self, namespace: str, label_selector: str) -> builtins.list[Obj]:
        pods = self._call(self.core.list_namespaced_pod, namespace, label_selector=label_selector)
        return [self._sanitize(p) for p in pods.items]

    def namespace_names(self) -> set[str]:
        return {ns.metadata.name for ns in self._call(self.core.list_namespace).items}

    def namespace_exists(self, name: str) -> bool:
        found = self._call(self.core.list_namespace, field_selector=f"metadata.name={name}").items
        return bool(found)

    def list_events(self, namespace: str, field_selector: str, limit: int = 100) -> builtins.list[Obj]:
        """Core events in ``namespace`` (e.g. ``involvedObject.name=NAME``), at most ``limit``."""
        events = self._call(self.core.list_namespaced_event, namespace, field_selector=field_selector, limit=limit)
        return [self._sanitize(e) for e in events.items]

    def create_event(self, namespace: str, body: Obj) -> Obj:
        return self._sanitize(self._call(self.core.create_namespaced_event, namespace, body))

    # -------------------------------------------------------------- admission configuration
    def get_webhook_configuration(self, name: str) -> Obj | None:
        try:
            return self._sanitize(self._call(self.admission.read_validating_webhook_configuration, name))
        except NotFound:
            return None

    def patch_webhook_configuration(self, name: str, patch: builtins.list[Obj], resource_version: str | None = None) -> Obj:
        """A JSON patch (RFC 6902); with ``resource_version`` it fails if the object moved."""
        if resource_version is not None:
            patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}, *patch]
        return self._sanitize(
            self._call(self.admission.patch_validating_webhook_configuration, name, patch, _content_type=JSON_PATCH)
        )

    # -------------------------------------------------------------- plumbing
    def _sanitize(self, obj: Any) -> Obj:
        """Typed client objects → plain JSON dicts (camelCase), like custom objects."""
        return obj if isinstance(obj, dict) else self.api_client.sanitize_for_serialization(obj)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._calls_lock:
            self.calls += 1
        kwargs.setdefault("_request_timeout", self.timeouts.request_timeout)
        try:
            return fn(*args, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc) from exc


def _with_precondition(patch: Obj, resource_version: str | None) -> Obj:
    if resource_version is None:
        return patch
    metadata = {**patch.get("metadata", {}), "resourceVersion": resource_version}
    return {**patch, "metadata": metadata}
