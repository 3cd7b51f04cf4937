"""2. Throughput: 1,000 static versions (the ~1 MiB bundle) over 20 Deployments, applied at once.

The versions are created by 16 threads as fast as the API server takes them (interleaved
over the Deployments, so every Deployment's numbering is contended); the clock runs from
the first create to the moment the watch has seen every version ``ready``.  The baseline
processes the same 1,000 with a thread pool as large as the operator's
``settings.execution.max_workers``, each version handed over as its create returns.

Also here: 7's real sweep over these ~1,000 versions (``real_sweep``), run while they exist.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import timedelta

from .baseline import Baseline
from .common import Row
from .context import Context, operator_max_workers
from .env import RELEASES_BUCKET
from .objects import Objects, parallel, static_spec
from .watch import Watcher

DEPLOYMENTS = 20
CREATORS = 16


def _names(total: int) -> list[tuple[str, str]]:
    per = total // DEPLOYMENTS
    return [(f"tp-{d:02d}", f"tp-{d:02d}-v{i:03d}") for i in range(per) for d in range(DEPLOYMENTS)]


def _prepare(ctx: Context, ns: str) -> Objects:
    ctx.env.create_namespace(ns)
    objects = Objects(ctx.api(), ns)
    parallel(lambda d: objects.create_deployment(f"tp-{d:02d}", kind="static"), list(range(DEPLOYMENTS)), 8)
    return objects


def _per_version(before: dict, after: dict, total: int) -> dict[str, float]:
    out = {}
    for (verb, resource, sub), count in sorted(after.items()):
        delta = count - before.get((verb, resource, sub), 0)
        if delta > 0 and verb != "WATCH" and resource not in ("leases", "nodes"):
            out[f"{verb} {resource}{'/' + sub if sub else ''}"] = round(delta / total, 2)
    return out


def _all_terminal(watcher: Watcher, total: int) -> bool:
    return watcher.count(lambda s: s.get("state") in ("ready", "failed")) >= total


def run(ctx: Context) -> None:
    total = ctx.scale(1000, 200)
    workers = operator_max_workers()
    bundle, uri = ctx.site_bundle()
    names = _names(total)
    timeout = 900

    # ---------------------------------------------------------------- the operator
    op_ns = ctx.ns("op", "tp")
    op = _prepare(ctx, op_ns)
    watcher = Watcher(ctx.env, "dver", op_ns)
    ctx.log(f"throughput: operator, {total} versions over {DEPLOYMENTS} Deployments")
    cpu_before = ctx.operator.cpu_seconds()
    requests_before = ctx.env.apiserver_requests()
    t0 = time.monotonic()
    parallel(lambda pair: op.create_version(pair[1], static_spec(pair[0], uri, bundle.sha256)), names, CREATORS)
    created = time.monotonic() - t0
    try:
        watcher.wait(lambda: _all_terminal(watcher, total), timeout=timeout, what="all versions terminal")
    finally:
        watcher.close()
    op_elapsed = max(t for t, n, s in watcher.events if s.get("state") in ("ready", "failed")) - t0
    failed = watcher.count(lambda s: s.get("state") == "failed")
    op_cpu = ctx.operator.cpu_seconds() - cpu_before
    op_requests = _per_version(requests_before, ctx.env.apiserver_requests(), total)
    ctx.log(f"  API requests per version (operator, incl. the benchmark's create): {op_requests}")
    ctx.log(f"  operator: {op_elapsed:.1f}s ({created:.1f}s to create), {failed} failed, operator CPU {op_cpu:.0f}s")

    # The operator's memory with these 1,000 versions, once it is quiet (benchmark 5).
    ctx.operator.settle()
    ctx.results.details.setdefault("rss", {})["1000_continuous"] = ctx.operator.rss_mib()
    ctx.results.details["throughput_ns"] = op_ns

    # ---------------------------------------------------------------- the baseline
    base_ns = ctx.ns("base", "tp")
    ctx.results.details["throughput_base_ns"] = base_ns
    base = _prepare(ctx, base_ns)
    baseline = Baseline(ctx.api(), ctx.s3, RELEASES_BUCKET)
    watcher = Watcher(ctx.env, "dver", base_ns)
    requests_before = ctx.env.apiserver_requests()
    cpu_before = time.process_time()
    ctx.log(f"throughput: baseline, {workers} worker threads")
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = []

            def create(pair: tuple[str, str]) -> None:
                base.create_version(pair[1], static_spec(pair[0], uri, bundle.sha256))
                futures.append(pool.submit(baseline.process, base_ns, pair[1]))

            t0 = time.monotonic()
            parallel(create, names, CREATORS)
            wait(futures)
            for f in futures:
                f.result()
        watcher.wait(lambda: _all_terminal(watcher, total), timeout=timeout, what="all baseline versions terminal")
    finally:
        watcher.close()
    base_elapsed = max(t for t, n, s in watcher.events if s.get("state") in ("ready", "failed")) - t0
    base_cpu = time.process_time() - cpu_before
    base_requests = _per_version(requests_before, ctx.env.apiserver_requests(), total)
    ctx.log(f"  baseline: {base_elapsed:.1f}s, benchmark process CPU {base_cpu:.0f}s; API requests per version {base_requests}")

    ctx.results.details["throughput"] = {
        "versions": total,
        "operator_s": op_elapsed,
        "operator_create_s": created,
        "operator_failed": failed,
        "operator_cpu_s": op_cpu,
        "baseline_s": base_elapsed,
        "baseline_workers": workers,
        "baseline_process_cpu_s": base_cpu,
        "api_requests_per_version": {"operator": op_requests, "baseline": base_requests},
    }
    ctx.results.add(
        Row(
            "2",
            f"throughput, {total} versions / {DEPLOYMENTS} Deployments",
            total / op_elapsed,
            "versions/s",
            total / base_elapsed,
            f"plain script, {workers} threads",
            target="≥20 versions/s",
            ok=total / op_elapsed >= 20 and failed == 0,
            better="higher",
            note=f"{op_elapsed:.0f} s vs {base_elapsed:.0f} s" + (f"; {failed} FAILED" if failed else ""),
        )
    )


def real_sweep(ctx: Context) -> None:
    """7 (real): one sweep over the throughput namespace, as if 60 days later: collects them all.

    Baseline: a plain loop over the baseline's 1,000 versions (also ready, with stored
    releases) doing only the unavoidable work per collected version: DELETE the release
    from S3 and PATCH the status (``artifactsCollectedAt`` and the Ready condition), after
    the same LIST.  The collector also HEADs each object before deleting it and posts an event.
    """
    from kubernetes import client

    from miosa_operator.controllers.retention import Collector
    from miosa_operator.domain.retention import Policy
    from miosa_operator.kube.client import Kube
    from miosa_operator.kube.events import KubeEvents
    from miosa_operator.settings import Settings
    from miosa_operator.store.router import StoreRouter

    from .fleet import now_utc

    ns, base_ns = ctx.results.details.get("throughput_ns"), ctx.results.details.get("throughput_base_ns")
    if not ns or not base_ns:
        ctx.log("real sweep skipped: no throughput namespaces")
        return
    kube = Kube(ctx.api())
    collector = Collector(kube, StoreRouter.from_settings(Settings.load()), Policy(), KubeEvents(kube))
    when = now_utc() + timedelta(days=60)
    start = time.perf_counter()
    report = collector.sweep(now=when, namespace=ns)
    elapsed = time.perf_counter() - start
    checked, collected = len(report.plan.decisions), len(report.collected)

    custom = client.CustomObjectsApi(ctx.api())
    start = time.perf_counter()
    items = custom.list_namespaced_custom_object("deploy.miosa.io", "v1alpha1", base_ns, "deploymentversions")["items"]
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    for item in items:
        uri = item["status"]["artifactUri"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        ctx.s3.delete_object(Bucket=bucket, Key=key)
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": "ArtifactsCollected",
            "message": "collected",
            "observedGeneration": 1,
            "lastTransitionTime": stamp,
        }
        custom.patch_namespaced_custom_object_status(
            "deploy.miosa.io",
            "v1alpha1",
            base_ns,
            "deploymentversions",
            item["metadata"]["name"],
            {"status": {"artifactsCollectedAt": stamp, "conditions": [condition]}},
            _content_type="application/merge-patch+json",
        )
    base_elapsed = time.perf_counter() - start
    ctx.results.details["gc_real"] = {
        "checked": checked,
        "collected": collected,
        "api_calls": report.api_calls,
        "seconds": elapsed,
        "baseline_seconds": base_elapsed,
        "baseline_versions": len(items),
    }
    ctx.results.add(
        Row(
            "7",
            f"real sweep, {checked:,} versions ({collected:,} collected)",
            elapsed,
            "s",
            base_elapsed,
            f"plain loop: S3 DELETE + status PATCH, {len(items):,}",
            target="<10 s",
            ok=elapsed < 10,
            note=f"{report.api_calls} API calls (Kube.calls) + {collected} HEAD+DELETE to S3",
        )
    )
