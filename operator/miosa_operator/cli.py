"""``miosa-operator``: run the operator, generate the CRDs, fetch a release.

``run`` wraps ``kopf.run`` so that users need not know the handlers' module path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    kopf.run(
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
    4 store or local filesystem error (retrying may help)."""
    from .serve.fetch import FetchRefused, fetch_release, parse_sha256
    from .settings import Settings
    from .store import StoreError, StoreRouter

    try:
        expected = parse_sha256(args.sha256)
        settings = Settings.load()
        limits = settings.limits
        store = StoreRouter.from_settings(settings)
    except ValueError as exc:
        print(f"miosa-operator fetch: {exc}", file=sys.stderr)
        return 2
    try:
        result = fetch_release(store, args.uri, expected, Path(args.dest), limits)
    except FetchRefused as refused:
        print(f"refused: {refused.reason}: {refused.message}", file=sys.stderr)
        return 3
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return 4
    except OSError as exc:
        print(f"cannot unpack into {args.dest}: {exc}", file=sys.stderr)
        return 4
    summary = f"{result.files} files, {result.total_bytes} bytes, sha256 {result.sha256}"
    print(f"fetched {args.uri}: {summary} -> {args.dest}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve.server import serve

    try:
        serve(Path(args.dir), args.port, entrypoint=args.entrypoint, host=args.host)
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
    sweeper = Collector.from_config(Kube.from_environment(), Settings.load())
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miosa-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all")
    run.add_argument("--standalone", action="store_true", help="no peering with other operator instances")
    run.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("directory", nargs="?", default="crds")
    crds.set_defaults(func=_crds)

    fetch = sub.add_parser("fetch", help="download, verify and unpack a static release (init container)")
    fetch.add_argument("--uri", required=True, help="the release, s3://… or file:///…/dist.tar.zst")
    fetch.add_argument("--sha256", required=True, help="its expected sha256 (the version's status.artifactSha256)")
    fetch.add_argument("--dest", required=True, help="directory to create; its parent must be writable")
    fetch.set_defaults(func=_fetch)

    serve = sub.add_parser("serve", help="serve an unpacked static release over HTTP")
    serve.add_argument("--dir", required=True, help="the unpacked release")
    serve.add_argument("--port", required=True, type=int)
    serve.add_argument("--entrypoint", default="index.html", help="file served for / (default: index.html)")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.set_defaults(func=_serve)
    gc = sub.add_parser("gc", help="collect artifacts of versions past retention (one sweep)")
    gc.add_argument("--dry-run", action="store_true", help="only report what would be collected")
    gc.add_argument("--now", help="evaluate retention as of this RFC 3339 time (default: now)")
    gc.add_argument("-n", "--namespace", help="only this namespace (tenant); default: all")
    gc.add_argument("-o", "--output", choices=["text", "json"], default="text")
    gc.set_defaults(func=_gc)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
