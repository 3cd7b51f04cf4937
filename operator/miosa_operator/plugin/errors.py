"""Exit codes and the translation of API and transport failures into one-line messages.

Scripts (CI pipelines, GitOps hooks) branch on the exit code, humans read the message, so
every failure carries both:

* 0 ok, 1 refused or invalid (webhook denial, 422, a failed wait), 2 usage (argparse),
  3 not found, 4 forbidden (RBAC), 5 cluster (or artifact store) unreachable.
* The API server answers errors with a JSON ``Status``; its ``message`` is what a human
  needs (for a webhook denial it is the webhook's own sentence), never the raw body.
* 403 and 404 are rephrased with what *we* asked for (verb, resource, name, namespace),
  because that is what the user can act on: which role to ask for, which name to check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum

import urllib3
from kubernetes.client.exceptions import ApiException

from ..api import meta


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    NOT_FOUND = 3
    FORBIDDEN = 4
    UNREACHABLE = 5


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


def status_message(exc: ApiException) -> str:
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


def from_api_exception(exc: ApiException, request: Request, server: str) -> PluginError:
    status = exc.status or 0
    if status == 0:  # the client never got an HTTP answer
        return PluginError(f"cannot reach the Kubernetes API server at {server}: {exc.reason}", ExitCode.UNREACHABLE)
    if status == 404 and request.name:
        return not_found(request.plural, request.name, request.namespace)
    if status == 404:
        return PluginError(
            f"{request.resource} is not served by {server} (are the miosa CRDs installed?)", ExitCode.NOT_FOUND
        )
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


_OBJECT_REPR = re.compile(r"<[^<>]*object at 0x[0-9a-fA-F]+>:?\s*")


def describe_transport(exc: BaseException) -> str:
    """A short phrase for a connection failure, without urllib3's object reprs and retries."""
    reason: BaseException = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        reason = exc.reason
    text = _OBJECT_REPR.sub("", str(reason)).strip()
    # Order matters: urllib3's NewConnectionError subclasses ConnectTimeoutError, and
    # NameResolutionError subclasses NewConnectionError.
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "cannot resolve the server's host name"
    if isinstance(reason, ConnectionRefusedError) or "connection refused" in text.lower():
        return "connection refused"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        _, marker, cause = text.partition("Failed to establish a new connection: ")
        return cause if marker else text
    if isinstance(reason, (TimeoutError, urllib3.exceptions.TimeoutError)):
        return "timed out"
    if isinstance(reason, urllib3.exceptions.SSLError):
        return f"TLS error: {text}"
    return text or type(reason).__name__
