"""An async gateway to the Kubernetes API server with two identities: the API's and the caller's.

Design decisions:

* **Two TLS sessions, never mixed.** The API process talks to the API server as itself
  (its ServiceAccount, or the kubeconfig's user, which may be a client certificate) only to
  review tokens, check access and resolve a ``dep_`` id; everything a caller asks for is
  sent with the caller's own bearer token.  The caller's session carries the cluster's CA
  and nothing else: the API server authenticates a client certificate *before* a bearer
  token, so sending the caller's token over a session that presents the API's certificate
  would act as the API, not as the caller.  No impersonation rights are needed, and the API
  server's audit log (and the history's actor, set by the admission webhook) name the caller.
* Plain REST with aiohttp (already a kopf dependency), not the generated client: the API
  process is asyncio end to end, and the only calls are GET/LIST/PATCH/POST of a few kinds.
* Every failure is a ``KubeError`` with the HTTP status (0 for transport problems) and the
  API server's ``Status`` message, so the service layer decides 404/403/409/422 in one place.
* Bounded time: a connect and a total timeout on every request, no retries of writes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client

from ..api import meta
from ..api.types import Obj
from ..kube.client import load_api_client

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


@dataclass(frozen=True)
class Cluster:
    """Where the API server is and how the API process itself authenticates to it."""

    host: str
    ca_file: str | None
    verify: bool
    cert_file: str | None
    key_file: str | None
    configuration: client.Configuration

    @classmethod
    def from_environment(cls) -> Cluster:
        """In-cluster config in a pod, else ``$KUBECONFIG`` / ``~/.kube/config`` (like kubectl)."""
        cfg = load_api_client().configuration
        return cls(
            host=str(cfg.host).rstrip("/"),
            ca_file=cfg.ssl_ca_cert,
            verify=bool(cfg.verify_ssl),
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            configuration=cfg,
        )

    def own_authorization(self) -> str | None:
        """The API's own ``Authorization`` header value (refreshed for rotating in-cluster tokens)."""
        return authorization_header(self.configuration)

    def ssl_context(self, with_client_certificate: bool) -> ssl.SSLContext | bool:
        if not self.host.startswith("https://"):
            return False
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if with_client_certificate and self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def authorization_header(configuration: client.Configuration) -> str | None:
    """The ``Authorization`` value a client configuration sends (``Bearer …``), if any.

    Asked through ``auth_settings()``, the generated client's own way: the key under which a
    kubeconfig token is stored differs between client versions, and in-cluster tokens are
    refreshed by a hook that runs there."""
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and str(setting.get("key", "")).lower() == "authorization" and setting.get("value"):
            return str(setting["value"])
    return None


def _status_message(status: int, text: str) -> tuple[str, str]:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return str(body.get("message") or f"HTTP {status}"), str(body.get("reason") or "")
    return f"HTTP {status}", ""


def _path(plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
    path = f"/apis/{meta.GROUP}/{meta.VERSION}"
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


class Kube:
    """The calls the HTTP API makes; ``token=None`` means "as the API itself"."""

    def __init__(self, cluster: Cluster, timeout: float = 30.0, connections: int = 100) -> None:
        self.cluster = cluster
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self.connections = connections
        self._own: aiohttp.ClientSession | None = None
        self._callers: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        def session(with_cert: bool) -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(ssl=self.cluster.ssl_context(with_cert), limit=self.connections)
            return aiohttp.ClientSession(base_url=None, connector=connector, timeout=self.timeout)

        self._own = session(with_cert=True)
        self._callers = session(with_cert=False)

    async def close(self) -> None:
        for session in (self._own, self._callers):
            if session is not None:
                await session.close()

    # ------------------------------------------------------------------ the API's own calls
    async def token_review(self, token: str) -> Obj:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        return await self._request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", None, body=body)

    async def access_review(self, user: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
        spec: Obj = {"user": user.get("username", ""), "resourceAttributes": dict(attributes)}
        for key in ("uid", "groups", "extra"):
            if user.get(key):
                spec[key] = user[key]
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        answer = await self._request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", None, body=body)
        return bool((answer.get("status") or {}).get("allowed"))

    async def find_deployments_by_id(self, deployment_id: str) -> list[Obj]:
        """Deployments (any namespace) whose ``status.id`` is ``deployment_id``: one field-selected LIST."""
        params = {"fieldSelector": f"status.id={deployment_id}", "limit": "2"}
        answer = await self._request("GET", _path(meta.DEPLOYMENT_PLURAL), None, params=params)
        return list(answer.get("items") or [])

    async def server_ready(self) -> bool:
        try:
            await self._request("GET", "/readyz", None, raw=True)
        except KubeError:
            return False
        return True

    # ------------------------------------------------------------------ as the caller
    async def get(self, token: str, plural: str, namespace: str, name: str) -> Obj:
        return await self._request("GET", _path(plural, namespace, name), token)

    async def list(self, token: str, plural: str, namespace: str, *, labels: str = "", fields: str = "") -> list[Obj]:
        params = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        answer = await self._request("GET", _path(plural, namespace), token, params=params)
        return list(answer.get("items") or [])

    async def patch(self, token: str, plural: str, namespace: str, name: str, patch: Obj) -> Obj:
        return await self._request("PATCH", _path(plural, namespace, name), token, body=patch, content_type=MERGE_PATCH)

    async def create(self, token: str, plural: str, namespace: str, body: Obj) -> Obj:
        return await self._request("POST", _path(plural, namespace), token, body=body)

    # ------------------------------------------------------------------ plumbing
    async def _request(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        params: Mapping[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Obj:
        session = self._callers if token is not None else self._own
        assert session is not None, "Kube.start() was not awaited"
        headers = {"Accept": "application/json"}
        authorization = f"Bearer {token}" if token is not None else self.cluster.own_authorization()
        if authorization:
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            # aiohttp's own timeout, and a hard one around the whole exchange: a benchmark under
            # heavy API server load once saw a request outlive the former.
            async with asyncio.timeout(self.timeout.total + 1 if self.timeout.total else None):
                async with session.request(
                    method, self.cluster.host + path, params=params, data=data, headers=headers
                ) as response:
                    text = await response.text()
                    if response.status >= 400:
                        message, reason = _status_message(response.status, text)
                        raise KubeError(response.status, message, reason)
                    return {} if raw else json.loads(text)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(0, f"cannot reach the Kubernetes API server: {type(exc).__name__}: {exc}") from exc
