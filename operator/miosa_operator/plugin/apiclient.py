"""A small Kubernetes API client on the standard library: JSON over HTTPS, and watches.

Why not the ``kubernetes`` package: the plugin makes one to three requests per command, and
importing that package (with urllib3, dateutil and its generated models) cost more time
than kubectl takes for a whole ``get``.  ``http.client`` and ``ssl`` do the same requests;
``kubeconfig`` resolves where and how.

* TLS: the cluster's CA (file or data), or the system's; ``insecure-skip-tls-verify``;
  ``tls-server-name`` as SNI and for verification.  Client certificates given as data are
  written to a private temporary file just long enough for ``ssl`` to load them.
* Credentials: bearer token (or token file, re-read per process), basic auth, client
  certificate, or an ``exec`` plugin run once per process (``ExecCredential``).
* Failures: a non-2xx answer raises ``ApiStatus`` (status, reason, the body's text);
  transport failures surface as ``OSError`` (refused, unresolvable, TLS, timeouts), which
  ``errors`` turns into messages and exit codes.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

from .. import __version__
from ..api.types import Obj
from .kubeconfig import Endpoint, KubeconfigError

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = f"kubectl-miosa/{__version__}"
FIELD_MANAGER = "miosa-plugin"
"""Who owns the fields the plugin writes (server-side apply bookkeeping).  Named explicitly:
the default would come from the User-Agent ("kubectl-miosa"), and GitOps tools treat every
manager whose name starts with "kubectl" as a stray manual edit to take over — Flux would
then delete a rollback's ``promotedVersion`` that Git leaves out (tests/e2e/test_flux.py)."""
WRITES = frozenset({"POST", "PUT", "PATCH"})


class ApiStatus(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.body = status, reason, body


class ApiClient:
    def __init__(self, endpoint: Endpoint, timeout: float = 30.0, connect_timeout: float = 10.0) -> None:
        self.endpoint, self.timeout, self.connect_timeout = endpoint, timeout, connect_timeout
        parts = urlsplit(endpoint.server)
        self.scheme, self.host, self.port = parts.scheme, parts.hostname or "", parts.port
        self.base_path = parts.path.rstrip("/")
        self._context: ssl.SSLContext | None = None
        self._headers: dict[str, str] | None = None

    @property
    def server(self) -> str:
        return self.endpoint.server

    # ------------------------------------------------------------------ requests
    def request(self, method: str, path: str, query: Obj | None = None, body: Obj | None = None,
                content_type: str = JSON) -> Obj:  # fmt: skip
        if method in WRITES:
            query = {**(query or {}), "fieldManager": FIELD_MANAGER}
        response, connection = self._send(method, path, query, body, content_type, self.timeout)
        try:
            data = response.read()
        finally:
            connection.close()
        if response.status >= 300:
            raise ApiStatus(response.status, response.reason, data.decode("utf-8", "replace"))
        return json.loads(data) if data else {}

    def watch(self, path: str, query: Obj, timeout: float) -> Iterator[Obj]:
        """The events of one watch request (``{"type": …, "object": …}``), until the server ends it."""
        query = {**query, "watch": "1", "timeoutSeconds": str(max(1, int(timeout)))}
        response, connection = self._send("GET", path, query, None, JSON, timeout + 5)
        try:
            if response.status >= 300:
                raise ApiStatus(response.status, response.reason, response.read().decode("utf-8", "replace"))
            while line := response.readline():
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()

    def _send(self, method: str, path: str, query: Obj | None, body: Obj | None, content_type: str,
              timeout: float) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:  # fmt: skip
        target = self.base_path + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": JSON, "User-Agent": USER_AGENT, **self._auth_headers()}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        connection = self._connection(timeout)
        try:
            connection.request(method, target, body=payload, headers=headers)
            return connection.getresponse(), connection
        except BaseException:
            connection.close()
            raise

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "http":
            return http.client.HTTPConnection(self.host, self.port, timeout=min(timeout, self.connect_timeout))
        connection = http.client.HTTPSConnection(
            self.host, self.port, timeout=min(timeout, self.connect_timeout), context=self._ssl_context()
        )
        connection.connect()  # connect with the short timeout, then read with the long one
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    # ------------------------------------------------------------------ TLS and credentials
    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is not None:
            return self._context
        endpoint = self.endpoint
        context = ssl.create_default_context(
            cafile=endpoint.ca_file, cadata=endpoint.ca_data.decode() if endpoint.ca_data else None
        )
        if endpoint.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert, key = endpoint.cert_data, endpoint.key_data
        exec_cert = self._exec_credential().get("clientCertificateData") if endpoint.exec else None
        if exec_cert:
            cert, key = exec_cert.encode(), self._exec_credential().get("clientKeyData", "").encode()
        if endpoint.cert_file or cert:
            _load_client_cert(context, endpoint.cert_file, endpoint.key_file, cert, key)
        if endpoint.tls_server_name and not endpoint.insecure:
            context = _SniContext(context, endpoint.tls_server_name)  # type: ignore[assignment]
        self._context = context
        return context

    def auth_headers(self) -> dict[str, str]:
        """The credentials' headers (``Authorization``), e.g. for ``publish`` to forward the token."""
        return dict(self._auth_headers())

    def _auth_headers(self) -> dict[str, str]:
        if self._headers is not None:
            return self._headers
        endpoint, token = self.endpoint, None
        if endpoint.exec:
            token = self._exec_credential().get("token")
        elif endpoint.token_file:
            try:
                with open(endpoint.token_file) as handle:
                    token = handle.read().strip()
            except OSError as exc:
                raise KubeconfigError(f"cannot read tokenFile {endpoint.token_file}: {exc.strerror or exc}") from exc
        elif endpoint.token:
            token = endpoint.token
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif endpoint.username and endpoint.password is not None:
            import base64

            basic = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        self._headers = headers
        return headers

    _exec_status: Obj | None = None

    def _exec_credential(self) -> Obj:
        """Run the user's exec plugin once (client.authentication.k8s.io ExecCredential)."""
        if self._exec_status is not None:
            return self._exec_status
        spec = self.endpoint.exec or {}
        command = spec.get("command")
        if not command:
            raise KubeconfigError("exec credential plugin without a command")
        if os.sep in command and not os.path.isabs(command):
            command = os.path.join(self.endpoint.exec_base, command)
        api_version = spec.get("apiVersion") or "client.authentication.k8s.io/v1"
        request = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or [] if "name" in e}}
        env["KUBERNETES_EXEC_INFO"] = json.dumps(request)
        try:
            done = subprocess.run([command, *(spec.get("args") or [])], env=env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            hint = f" ({spec['installHint'].strip()})" if spec.get("installHint") else ""
            raise KubeconfigError(f"exec credential plugin {command!r} could not run: {exc}{hint}") from exc
        if done.returncode != 0:
            raise KubeconfigError(f"exec credential plugin {command!r} failed: {done.stderr.strip()[:500]}")
        try:
            status = (json.loads(done.stdout) or {}).get("status") or {}
        except ValueError as exc:
            raise KubeconfigError(f"exec credential plugin {command!r} printed no ExecCredential") from exc
        self._exec_status = status
        return status


def _load_client_cert(context: ssl.SSLContext, cert_file: str | None, key_file: str | None,
                      cert: bytes | None, key: bytes | None) -> None:  # fmt: skip
    if cert_file and not cert:
        context.load_cert_chain(cert_file, key_file)
        return
    # ssl loads certificates from files only: a private directory, removed right away.
    with tempfile.TemporaryDirectory(prefix="kubectl-miosa-") as directory:
        cert_path, key_path = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for path, data in ((cert_path, cert or b""), (key_path, key or b"")):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path if key else None)


class _SniContext:
    """An SSLContext that sends ``tls-server-name`` as SNI and verifies the certificate for it."""

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        self._context, self._server_name = context, server_name

    def wrap_socket(self, sock: Any, server_hostname: str | None = None, **kwargs: Any) -> ssl.SSLSocket:
        return self._context.wrap_socket(sock, server_hostname=self._server_name, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
