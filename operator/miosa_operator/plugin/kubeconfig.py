"""kubeconfig files, read the way kubectl reads them, with nothing but PyYAML.

The plugin talks to the API server itself (``apiclient``) instead of importing the
``kubernetes`` package: that package alone took 0.46 s to import, more than kubectl needs
for a whole ``get``.  What kubectl users put in kubeconfigs is supported:

* ``$KUBECONFIG`` as a list of files merged like kubectl (the first file that names a
  cluster, user or context wins; the first ``current-context`` wins), else
  ``~/.kube/config``; ``--kubeconfig`` names one file; ``--context`` picks a context.
* clusters: ``server``, ``certificate-authority`` / ``-data``, ``insecure-skip-tls-verify``,
  ``tls-server-name``; relative file paths are relative to the kubeconfig that names them.
* users: ``client-certificate`` / ``-data`` + ``client-key`` / ``-data``, ``token`` /
  ``tokenFile``, ``username`` + ``password``, and ``exec`` credential plugins
  (``client.authentication.k8s.io`` v1 and v1beta1: EKS, GKE, AKS, OIDC helpers).
* The legacy ``auth-provider`` (removed from kubectl in 1.26) is refused with a message.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..api.types import Obj

DEFAULT_NAMESPACE = "default"


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the API server, resolved from one context."""

    server: str
    namespace: str = DEFAULT_NAMESPACE
    context: str = ""
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec: Obj | None = None
    exec_base: str = "."
    """Directory relative command paths of an exec plugin are resolved against."""


def files(kubeconfig: str | None) -> list[Path]:
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _read(path: Path) -> Obj:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise KubeconfigError(f"{path} is not a kubeconfig (a YAML mapping)")
    return data


@dataclass
class Merged:
    clusters: dict[str, tuple[Obj, Path]] = field(default_factory=dict)
    users: dict[str, tuple[Obj, Path]] = field(default_factory=dict)
    contexts: dict[str, Obj] = field(default_factory=dict)
    current: str = ""
    found: bool = False


def merge(paths: list[Path]) -> Merged:
    merged = Merged()
    for path in paths:
        data = _read(path)
        if not data:
            continue
        merged.found = True
        base = path.parent
        for key, target, inner in (("clusters", merged.clusters, "cluster"), ("users", merged.users, "user")):
            for entry in data.get(key) or []:
                if isinstance(entry, dict) and entry.get("name") and entry["name"] not in target:
                    target[entry["name"]] = (entry.get(inner) or {}, base)
        for entry in data.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") and entry["name"] not in merged.contexts:
                merged.contexts[entry["name"]] = entry.get("context") or {}
        if not merged.current and data.get("current-context"):
            merged.current = str(data["current-context"])
    return merged


def contexts(kubeconfig: str | None) -> list[str]:
    """Context names (for shell completion)."""
    try:
        return sorted(merge(files(kubeconfig)).contexts)
    except KubeconfigError:
        return []


def _path(value: Any, base: Path) -> str | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _data(value: Any, what: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError) as exc:
        raise KubeconfigError(f"{what} is not valid base64") from exc


def load(kubeconfig: str | None = None, context: str | None = None) -> Endpoint:
    paths = files(kubeconfig)
    merged = merge(paths)
    where = " or ".join(str(p) for p in paths)
    if not merged.found:
        raise KubeconfigError(f"no kubeconfig found ({where})")
    name = context or merged.current
    if not name:
        raise KubeconfigError(f"no current-context in {where}; pass --context")
    if name not in merged.contexts:
        raise KubeconfigError(f"context {name!r} not found in {where}")
    ctx = merged.contexts[name]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged.clusters:
        raise KubeconfigError(f"cluster {cluster_name!r} of context {name!r} not found in {where}")
    cluster, cluster_base = merged.clusters[cluster_name]
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"cluster {cluster_name!r} has no https:// server")
    user, user_base = merged.users.get(user_name, ({}, Path("."))) if isinstance(user_name, str) else ({}, Path("."))
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise KubeconfigError(
            f"user {user_name!r} uses auth-provider {provider!r}, which kubectl removed in 1.26: "
            "use an exec credential plugin (e.g. kubelogin, gke-gcloud-auth-plugin)"
        )
    return Endpoint(
        server=server.rstrip("/"),
        namespace=ctx.get("namespace") or DEFAULT_NAMESPACE,
        context=name,
        ca_file=_path(cluster.get("certificate-authority"), cluster_base),
        ca_data=_data(cluster.get("certificate-authority-data"), f"certificate-authority-data of cluster {cluster_name!r}"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        cert_file=_path(user.get("client-certificate"), user_base),
        key_file=_path(user.get("client-key"), user_base),
        cert_data=_data(user.get("client-certificate-data"), f"client-certificate-data of user {user_name!r}"),
        key_data=_data(user.get("client-key-data"), f"client-key-data of user {user_name!r}"),
        token=user.get("token"),
        token_file=_path(user.get("tokenFile"), user_base),
        username=user.get("username"),
        password=user.get("password"),
        exec=user.get("exec"),
        exec_base=str(user_base),
    )


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the chosen (or current) context, else ``default``."""
    try:
        return load(kubeconfig, context).namespace
    except KubeconfigError:
        return DEFAULT_NAMESPACE
