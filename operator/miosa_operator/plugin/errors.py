"""Exit codes and the translation of API and transport failures into one-line messages.

Scripts (CI pipelines, GitOps hooks) branch on the exit code, humans read the message, so
every failure carries both:

* 0 ok, 1 refused or invalid (webhook denial, 422, a failed or reverted rollout), 2 usage
  (argparse), 3 not found, 4 forbidden (RBAC), 5 cluster (or artifact store) unreachable,
  6 still in progress (``status`` of a rollout under way, or a wait that timed out).
* The API server answers errors with a JSON ``Status``; its ``message`` is what a human
  needs (for a webhook denial it is the webhook's own sentence), never the raw body.
* 403 and 404 are rephrased with what *we* asked for (verb, resource, name, namespace),
  because that is what the user can act on: which role to ask for, which name to check.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from enum import IntEnum

from ..api import meta
from .apiclient import ApiStatus


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    NOT_FOUND = 3
    FORBIDDEN = 4
    UNREACHABLE = 5
    IN_PROGRESS = 6


class PluginError(Exception):
    """A failure to report on stderr and to turn into the process exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.REFUSED) -> None:
        super().__init__(message)
        self.code = code


# Singular names as kubectl prints them in "not found" messages.
_SINGULAR = {meta.VERSION_PLURAL: "deploymentversion", meta.DEPLOYMENT_PLURAL: "deployment"}
# Which aggregated ClusterRole grants a verb (PRODUCT.md: deployments:read / :write).
_READ_VERBS = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class Request:
    """What the plugin asked the API server, to phrase a failure in the user's terms."""

    verb: str
    plural: str
    namespace: str
    name: str | None = None

    @property
    def resource(self) -> str:
        return f"{self.plural}.{meta.GROUP}"

    def describe(self) -> str:
        target = f'{self.resource} "{self.name}"' if self.name else self.resource
        return f'{self.verb} {target} in namespace "{self.namespace}"'


def status_message(exc: ApiStatus) -> str:
    """The ``message`` of the API server's Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{exc.status} {exc.reason}".strip()


def not_found(plural: str, name: str, namespace: str) -> PluginError:
    kind = _SINGULAR.get(plural, plural)
    return PluginError(f'{kind} "{name}" not found in namespace "{namespace}"', ExitCode.NOT_FOUND)


def from_api_status(exc: ApiStatus, request: Request, server: str) -> PluginError:
    status = exc.status
    if status == 404 and request.name:
        return not_found(request.plural, request.name, request.namespace)
    if status == 404:
        return PluginError(f"{request.resource} is not served by {server} (are the miosa CRDs installed?)", ExitCode.NOT_FOUND)
    if status == 403:
        role = "miosa-deployments-read" if request.verb in _READ_VERBS else "miosa-deployments-write"
        return PluginError(
            f"forbidden: you may not {request.describe()} (needs ClusterRole {role} or the 'view'/'edit' role "
            f"it aggregates into): {status_message(exc)}",
            ExitCode.FORBIDDEN,
        )
    if status == 401:
        return PluginError(f"unauthorized: {server} rejected the credentials of this kubeconfig", ExitCode.FORBIDDEN)
    return PluginError(status_message(exc), ExitCode.REFUSED)


def from_transport_error(exc: BaseException, server: str) -> PluginError:
    return PluginError(f"cannot reach the Kubernetes API server at {server}: {describe_transport(exc)}", ExitCode.UNREACHABLE)


def describe_transport(exc: BaseException) -> str:
    """A short phrase for a connection failure."""
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the server's host name"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS error: {getattr(exc, 'verify_message', None) or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else exc.strerror
    return str(exc) or type(exc).__name__
