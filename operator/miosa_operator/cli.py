"""``miosa-operator``: run the operator, generate the CRDs, fetch a release.

``run`` wraps ``kopf.run`` so that users need not know the handlers' module path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from .kube import lazy_client

    lazy_client.install()  # before kopf and the handlers import ``kubernetes``: 34 MB less RSS
    from . import handlers, lifecycle  # registers the handlers
    from .ingest.isolation import WARM, start_fork_server
    from .observability import logs

    start_fork_server()  # while single-threaded, and without the store's credentials
    config = handlers.SETTINGS
    WARM.keep_at_most(config.max_concurrent_ingestions)
    logs.configure(
        args.log_format or config.log_format,
        verbose=args.verbose,
        census=handlers.CENSUS,
        secrets=(config.s3_secret_access_key, config.s3_session_token),
    )
    lifecycle.run(
        standalone=args.standalone,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from .api import crdgen

    for path in crdgen.write(Path(args.directory)):
        print(path)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    """Exit 0 fetched, 2 bad arguments or configuration, 3 release refused (permanent),
    4 the release could not be had (endpoint or store unavailable or refusing, after
    retries) or the local filesystem failed."""
    from .serve.client import EndpointSource, ReleaseUnavailable, ReleaseUnreadable, fetch_with_retries
    from .serve.fetch import FetchRefused, FetchResult, ReleaseSource, fetch_release, parse_sha256
    from .settings import Settings

    try:
        expected = parse_sha256(args.sha256)
        settings = Settings.load()
        source: ReleaseSource
        if args.release:
            source, name = EndpointSource(settings.artifacts_pod_url, settings.artifacts_token_file), args.release
        else:
            from .store import StoreRouter

            source, name = StoreRouter.from_settings(settings), args.uri
    except ValueError as exc:
        print(f"miosa-operator fetch: {exc}", file=sys.stderr)
        return 2

    def attempt() -> FetchResult:
        return fetch_release(source, name, expected, Path(args.dest), settings.limits)

    def report(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        result = fetch_with_retries(attempt, deadline=args.retry_for, report=report)
    except ValueError as exc:
        print(f"miosa-operator fetch: {exc}", file=sys.stderr)
        return 2
    except FetchRefused as refused:
        print(f"refused: {refused.reason}: {refused.message}", file=sys.stderr)
        return 3
    except (ReleaseUnavailable, ReleaseUnreadable) as exc:
        print(f"cannot download the release: {exc}", file=sys.stderr)
        return 4
    except OSError as exc:
        print(f"cannot unpack into {args.dest}: {exc}", file=sys.stderr)
        return 4
    except Exception as exc:
        from .store import StoreError

        if isinstance(exc, StoreError):
            print(f"store error: {exc}", file=sys.stderr)
            return 4
        raise
    summary = f"{result.files} files, {result.total_bytes} bytes, sha256 {result.sha256}"
    print(f"fetched {name}: {summary} -> {args.dest}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve.server import serve

    try:
        serve(Path(args.dir), args.port, entrypoint=args.entrypoint, host=args.host, cache_bytes=args.cache_bytes)
    except ValueError as exc:
        print(f"miosa-operator serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _gc(args: argparse.Namespace) -> int:
    """One retention sweep now (or as if at --now), optionally only reporting."""
    import json
    from datetime import datetime

    from .controllers.retention import Collector
    from .kube.client import Kube
    from .settings import Settings

    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else None
    settings = Settings.load()
    sweeper = Collector.from_config(Kube.from_environment(settings.kube_timeouts), settings)
    report = sweeper.sweep(dry_run=args.dry_run, now=now, namespace=args.namespace)
    rows = [{"namespace": d.namespace, "name": d.name, "why": d.why, "artifacts": list(d.uris)} for d in report.collected]
    if args.output == "json":
        kept = report.plan.kept_because()
        print(json.dumps({"dryRun": report.dry_run, "collected": rows, "kept": kept, "apiCalls": report.api_calls}, indent=2))
        return 0
    verb = "would collect" if report.dry_run else "collected"
    for row in rows:
        print(f"{verb} {row['namespace']}/{row['name']}: {row['why']}")
    print(f"{len(rows)} {verb}, {len(report.plan.decisions) - len(rows)} kept, {report.api_calls} API calls")
    return 0


def _api(args: argparse.Namespace) -> int:
    """The HTTP API and the deploy-history web page (its own process, not inside kopf)."""
    from .httpapi.server import serve
    from .settings import Settings, SettingsError

    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"miosa-operator api: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("api_host", args.host), ("api_port", args.port)) if v is not None}
    serve(settings.model_copy(update=overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miosa-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all")
    run.add_argument("--standalone", action="store_true", help="no peering with other operator instances")
    run.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument(
        "--log-format", choices=["text", "json"], default=None, help="text or json lines (default: $MIOSA_LOG_FORMAT, else text)"
    )
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("directory", nargs="?", default="crds")
    crds.set_defaults(func=_crds)

    fetch = sub.add_parser("fetch", help="download, verify and unpack a static release (init container)")
    source = fetch.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--release",
        help="<namespace>/<dep id>/<ver id>, downloaded from the artifact endpoint ($MIOSA_ARTIFACTS_URL) "
        "with the token in $MIOSA_ARTIFACTS_TOKEN_FILE (what static pods do)",
    )
    source.add_argument("--uri", help="s3://… or file:///…/dist.tar.zst, read with the store's own credentials")
    fetch.add_argument("--sha256", required=True, help="its expected sha256 (the version's status.artifactSha256)")
    fetch.add_argument("--dest", required=True, help="directory to create; its parent must be writable")
    fetch.add_argument(
        "--retry-for",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="keep retrying an unavailable endpoint this long (default: 300)",
    )
    fetch.set_defaults(func=_fetch)

    serve = sub.add_parser("serve", help="serve an unpacked static release over HTTP")
    serve.add_argument("--dir", required=True, help="the unpacked release")
    serve.add_argument("--port", required=True, type=int)
    serve.add_argument("--entrypoint", default="index.html", help="file served for / (default: index.html)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--cache-bytes", type=int, default=32 << 20, help="memory for keeping small files (default: 32 MiB)")
    serve.set_defaults(func=_serve)
    gc = sub.add_parser("gc", help="collect artifacts of versions past retention (one sweep)")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be collected")
    gc.add_argument("--now", help="evaluate retention as of this RFC 3339 time (default: now)")
    gc.add_argument("-n", "--namespace", help="only this namespace (tenant); default: all")
    gc.add_argument("-o", "--output", choices=["text", "json"], default="text")
    gc.set_defaults(func=_gc)

    api = sub.add_parser("api", help="serve the HTTP API and the deploy-history web page (MIOSA_API_* settings)")
    api.add_argument("--host", default=None, help="address to listen on (default: MIOSA_API_HOST or 127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="port (default: MIOSA_API_PORT or 8090)")
    api.set_defaults(func=_api)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
