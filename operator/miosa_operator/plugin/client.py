"""The plugin's gateway to the cluster: kubeconfig loading and our custom objects.

Design decisions:

* The official ``kubernetes`` client, not ``kubectl`` subprocesses: no dependency on the
  kubectl binary's version or output format, and errors arrive as typed exceptions.
* Configuration comes from ``--kubeconfig``/``--context`` through
  ``kubernetes.config.new_client_from_config`` (``$KUBECONFIG``, merged lists included, when no
  flag is given), like kubectl.  ``-n`` defaults to the context's namespace, else ``default``.
* Every call names its ``Request`` (verb, resource, name) so that failures become a
  ``PluginError`` with the right exit code and a message about what the user asked for.
* Bounded time: each call has a connect and a read timeout, and connection retries are few,
  so an unreachable server is reported in seconds instead of hanging a CI job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ..api import meta
from .errors import (
    ExitCode,
    PluginError,
    Request,
    from_api_exception,
    from_transport_error,
)

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_NAMESPACE = "default"
CONNECT_TIMEOUT = 10.0


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the chosen (or current) kubeconfig context, else ``default``."""
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError):
        return DEFAULT_NAMESPACE  # connect() reports the broken kubeconfig properly
    chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else current
    return ((chosen or {}).get("context") or {}).get("namespace") or DEFAULT_NAMESPACE


def load_api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    cfg = client.Configuration()
    # One quick retry for a blip; read=0 because a retried PATCH is not ours to repeat.
    cfg.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, backoff_factor=0.2, allowed_methods=None)
    try:
        return config.new_client_from_config(
            config_file=kubeconfig, context=context, persist_config=False, client_configuration=cfg
        )
    except (ConfigException, OSError) as exc:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise PluginError(f"cannot load kubeconfig ({where}): {exc}", ExitCode.REFUSED) from exc


class Cluster:
    """Our custom resources in one namespace, with failures as ``PluginError``."""

    def __init__(self, api_client: client.ApiClient, namespace: str, request_timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.timeout = (min(CONNECT_TIMEOUT, request_timeout), request_timeout)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None, request_timeout: float) -> Cluster:
        api_client = load_api_client(kubeconfig, context)
        return cls(api_client, namespace or default_namespace(kubeconfig, context), request_timeout)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    # ------------------------------------------------------------------ reads
    def get_version(self, name: str) -> Obj:
        return self._get(meta.VERSION_PLURAL, name)

    def get_deployment(self, name: str) -> Obj:
        return self._get(meta.DEPLOYMENT_PLURAL, name)

    def list_versions(self, label_selector: str, field_selector: str = "") -> list[Obj]:
        request = Request("list", meta.VERSION_PLURAL, self.namespace)
        result = self._call(
            request,
            self.custom.list_namespaced_custom_object,
            meta.GROUP, meta.VERSION, self.namespace, meta.VERSION_PLURAL,
            label_selector=label_selector, field_selector=field_selector,
        )
        return list(result.get("items") or [])

    # ------------------------------------------------------------------ writes
    def patch_deployment(self, name: str, patch: Obj) -> Obj:
        """JSON merge patch: ``None`` removes a key (e.g. a stale change-cause annotation)."""
        request = Request("patch", meta.DEPLOYMENT_PLURAL, self.namespace, name)
        return self._call(
            request,
            self.custom.patch_namespaced_custom_object,
            meta.GROUP, meta.VERSION, self.namespace, meta.DEPLOYMENT_PLURAL, name, patch,
            _content_type=MERGE_PATCH,
        )

    # ------------------------------------------------------------------ plumbing
    def _get(self, plural: str, name: str) -> Obj:
        request = Request("get", plural, self.namespace, name)
        return self._call(
            request, self.custom.get_namespaced_custom_object, meta.GROUP, meta.VERSION, self.namespace, plural, name
        )

    def _call(self, request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            raise from_api_exception(exc, request, self.server) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise from_transport_error(exc, self.server) from exc
