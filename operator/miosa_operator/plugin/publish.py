"""``kubectl miosa publish DIR|FILE --deployment D [--promote] [--wait]`` through the HTTP API.

Publishing needs the artifact store, and tenants never get its credentials: the HTTP API
(``miosa-operator api``) stores the bundle under the tenant's own upload prefix and creates
the version with the caller as ``createdBy``.  So this command:

1. packs a directory reproducibly (``pack``), or takes a ``.tar.zst``/``.tar.gz``/``.tar``
   file as is, into a temporary file;
2. finds the Deployment's ``dep_`` id in the cluster (with the kubeconfig, like every other
   command), unless ``--deployment`` already is one;
3. streams the bundle to ``POST {api}/api/v1/deployments/{id}/versions`` with the bearer
   token of the kubeconfig's user (or ``--token`` / ``$MIOSA_API_TOKEN``): the API checks it
   with the cluster, so the same RBAC applies as to ``kubectl``;
4. with ``--promote``, promotes the new version; with ``--wait``, waits until it is built
   (and live, with ``--promote``).

The API's address comes from ``--api`` or ``$MIOSA_API_URL``.  HTTP errors are turned into
the plugin's exit codes (401/403 -> 4, 404 -> 3, 409/422 -> 1, unreachable -> 5).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..api.types import Obj
from .client import Cluster
from .errors import ExitCode, PluginError

CONTENT_TYPES = {"tar.zst": "application/zstd", "tar.gz": "application/gzip", "tar": "application/x-tar"}
_EXIT = {400: ExitCode.REFUSED, 401: ExitCode.FORBIDDEN, 403: ExitCode.FORBIDDEN, 404: ExitCode.NOT_FOUND}


def _settings() -> Any:
    """The settings (MIOSA_API_URL, MIOSA_API_TOKEN); imported here: publishing needs the full
    install (pydantic, zstandard), the light plugin package does not carry them."""
    try:
        from ..settings import Settings, SettingsError
    except ImportError as exc:
        raise PluginError(f"publish needs the full miosa-operator package: {exc}", ExitCode.USAGE) from exc
    try:
        return Settings.load()
    except SettingsError as exc:
        raise PluginError(str(exc), ExitCode.USAGE) from exc


def api_token(cluster: Cluster, explicit: str | None) -> str:
    token = explicit or _settings().client_api_token
    if token:
        return token
    header = cluster.api.auth_headers().get("Authorization", "")  # the kubeconfig's token, exec plugins included
    if header.lower().startswith("bearer "):
        return header[7:]
    raise PluginError(
        "publishing goes through the HTTP API, which needs a bearer token: use a kubeconfig whose user has a token, "
        "or pass --token (e.g. $(kubectl create token NAME))",
        ExitCode.REFUSED,
    )


def deployment_id(cluster: Cluster, deployment: str) -> str:
    if deployment.startswith("dep_"):
        return deployment
    status = cluster.get_deployment(deployment).get("status") or {}
    if not status.get("id"):
        raise PluginError(f'deployment "{deployment}" has no id yet (is the operator running?)', ExitCode.REFUSED)
    return str(status["id"])


def bundle_file(source: Path, directory: str) -> tuple[Path, str, str]:
    """(file to send, its content type, what it is) for a directory or an archive."""
    from ..ingest.errors import BundleRejected
    from ..ingest.streams import detect_format
    from .pack import PackError, pack_directory

    if source.is_dir():
        fd, name = tempfile.mkstemp(prefix="miosa-bundle-", suffix=".tar.zst", dir=directory)
        with os.fdopen(fd, "wb") as out:
            try:
                files = pack_directory(source, out)
            except PackError as exc:
                raise PluginError(str(exc), ExitCode.REFUSED) from exc
        return Path(name), CONTENT_TYPES["tar.zst"], f"{source} ({files} files, packed)"
    if not source.is_file():
        raise PluginError(f"{source}: no such file or directory", ExitCode.NOT_FOUND)
    with open(source, "rb") as data:
        head = data.read(1024)
    try:
        fmt = detect_format(head)
    except BundleRejected as exc:
        raise PluginError(f"{source}: {exc.message}", ExitCode.REFUSED) from exc
    return source, CONTENT_TYPES[fmt], str(source)


def call(
    method: str, url: str, token: str, *, body: Any = None, content_type: str = "application/json", timeout: float = 600
) -> Obj:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "Content-Type": content_type}
    data = body
    if isinstance(body, Path):
        headers["Content-Length"] = str(body.stat().st_size)
    elif body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        if isinstance(body, Path):
            with open(body, "rb") as stream, urllib.request.urlopen(request, data=stream, timeout=timeout) as answer:
                return json.loads(answer.read())
        with urllib.request.urlopen(request, data=data, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
            message = f"{error.get('message')} ({error.get('code')})"
        except ValueError:
            message = f"HTTP {exc.code}"
        raise PluginError(f"the API refused: {message}", _EXIT.get(exc.code, ExitCode.REFUSED)) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PluginError(f"cannot reach the miosa API at {url}: {exc}", ExitCode.UNREACHABLE) from exc


def publish(cluster: Cluster, args: argparse.Namespace) -> int:
    base = (args.api or _settings().client_api_url or "").rstrip("/")
    if not base:
        raise PluginError("where is the miosa API? pass --api URL or set MIOSA_API_URL", ExitCode.REFUSED)
    token = api_token(cluster, args.token)
    dep_id = deployment_id(cluster, args.deployment)
    with tempfile.TemporaryDirectory(prefix="miosa-publish-") as scratch:
        path, content_type, what = bundle_file(Path(args.source), scratch)
        params = {
            k: v
            for k, v in (
                ("external_workspace_id", args.workspace),
                ("external_user_id", args.user),
                ("external_project_id", args.project),
                ("entrypoint", args.entrypoint),
            )
            if v
        }
        if args.wait:
            params.update(wait="true", timeout=str(args.timeout))
        query = urllib.parse.urlencode(params)
        url = f"{base}/api/v1/deployments/{dep_id}/versions" + (f"?{query}" if query else "")
        version = call("POST", url, token, body=path, content_type=content_type, timeout=args.timeout + 60)
    print(f"published {what} as {version['name']} ({version['id']}), state {version['state'] or 'created'}")
    if args.wait and version.get("state") == "failed":
        raise PluginError(f"{version['name']} failed to build; see `kubectl miosa logs {version['name']}`", ExitCode.REFUSED)
    if args.promote:
        query = urllib.parse.urlencode({"wait": "true", "timeout": str(args.timeout)} if args.wait else {})
        url = f"{base}/api/v1/deployments/{dep_id}/versions/{version['id']}/promote" + (f"?{query}" if query else "")
        result = call("POST", url, token, body={}, timeout=args.timeout + 60)
        print(f"promotion of {version['name']}: {result['status']}")
    return 0


def add_parser(leaves: Any, prog: str) -> None:
    parser = leaves.add(
        "publish",
        "Publish a directory or bundle as a new version through the HTTP API (optionally promote it).",
        f"{prog} publish ./dist --deployment site --workspace acme-team-123 --promote --wait",
        publish,
    )
    parser.add_argument(
        "source", metavar="DIR|FILE", help="a directory (packed reproducibly as .tar.zst) or a .tar.zst/.tar.gz/.tar"
    )
    parser.add_argument("--deployment", required=True, metavar="NAME", help="the Deployment (name, or its dep_ id)")
    parser.add_argument("--promote", action="store_true", help="promote the new version")
    parser.add_argument("--wait", action="store_true", help="wait until built (and live, with --promote)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="how long --wait waits (default: 300)")
    parser.add_argument("--workspace", help="externalWorkspaceId of the end-customer")
    parser.add_argument("--user", help="externalUserId")
    parser.add_argument("--project", help="externalProjectId")
    parser.add_argument("--entrypoint", help="file served for / (default: index.html)")
    parser.add_argument("--api", metavar="URL", help="the miosa API (default: $MIOSA_API_URL)")
    parser.add_argument("--token", help="bearer token (default: $MIOSA_API_TOKEN, else the kubeconfig user's token)")
