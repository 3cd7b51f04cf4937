"""2. Throughput: 1,000 static versions (the ~1 MiB bundle) over 20 Deployments, applied at once.

The versions are created by 16 threads as fast as the API server takes them (interleaved
over the Deployments, so every Deployment's numbering is contended); the clock runs from
the first create to the moment the watch has seen every version ``ready``.  The baseline
processes the same 1,000 with a thread pool as large as the operator's
``settings.execution.max_workers``, each version handed over as its create returns.

Also here: 7's real sweep over these ~1,000 versions (``real_sweep``), run while they exist,
and 8 (``sharded``): the same workload with the operator as 1, 2 and 4 processes (shards).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import timedelta

from . import costs
from .baseline import Baseline, ContractFloor
from .common import Row
from .context import Context, operator_max_workers
from .env import RELEASES_BUCKET, Operator
from .objects import Objects, parallel, static_spec
from .watch import Watcher

DEPLOYMENTS = 20
CREATORS = 16
TIMEOUT = 900  # seconds for all versions of one pass to settle


def _names(total: int) -> list[tuple[str, str]]:
    per = total // DEPLOYMENTS
    return [(f"tp-{d:02d}", f"tp-{d:02d}-v{i:03d}") for i in range(per) for d in range(DEPLOYMENTS)]


def _prepare(ctx: Context, ns: str) -> Objects:
    ctx.env.create_namespace(ns)
    objects = Objects(ctx.api(), ns)
    parallel(lambda d: objects.create_deployment(f"tp-{d:02d}", kind="static"), list(range(DEPLOYMENTS)), 8)
    return objects


def _all_terminal(watcher: Watcher, total: int) -> bool:
    return watcher.count(lambda s: s.get("state") in ("ready", "failed")) >= total


def _spent(before: dict[str, float], after: dict[str, float], benchmark_cpu: float) -> dict[str, float]:
    """CPU seconds each server used between two readings; ``benchmark``: this process's own
    (the creates and the watch on the operator's side; only the watch on the baseline's,
    whose creates are counted in its own process)."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    if benchmark_cpu:
        spent["benchmark"] = benchmark_cpu
    return spent


def _per_version(spent: dict[str, float], total: int) -> str:
    top = sorted(spent.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {seconds / total * 1000:.1f}" for name, seconds in top if seconds > 0) + " ms"


def _plain_script(
    ctx: Context, label: str, script: type[Baseline], names: list[tuple[str, str]], uri: str, digest: str
) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """A plain script's pass over the same workload, each version handed over as its create
    returns: elapsed seconds, its process's CPU, the rest of the machine's, requests per version."""
    total, workers = len(names), operator_max_workers()
    ns = ctx.ns(label, "tp")
    ctx.results.details[f"throughput_{label}_ns"] = ns
    objects = _prepare(ctx, ns)
    processor = script(ctx.api(), ctx.s3, RELEASES_BUCKET)
    watcher = Watcher(ctx.env, "dver", ns)
    before = costs.Snapshot.take(ctx.env, watcher)
    cpu_before = time.process_time()
    servers_before = ctx.env.server_cpu_seconds()
    ctx.log(f"throughput: {script.__name__}, {workers} worker threads")
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = []

            def create(pair: tuple[str, str]) -> None:
                objects.create_version(pair[1], static_spec(pair[0], uri, digest))
                futures.append(pool.submit(processor.process, ns, pair[1]))

            t0 = time.monotonic()
            parallel(create, names, CREATORS)
            wait(futures)
            for f in futures:
                f.result()
        watcher.wait(lambda: _all_terminal(watcher, total), timeout=TIMEOUT, what=f"all {label} versions terminal")
        requests = costs.per_version(before, costs.Snapshot.take(ctx.env, watcher), total)
    finally:
        watcher.close()
    elapsed = max(t for t, n, s in watcher.events if s.get("state") in ("ready", "failed")) - t0
    cpu = time.process_time() - cpu_before
    servers = _spent(servers_before, ctx.env.server_cpu_seconds(), 0.0)  # its process: cpu
    ctx.log(f"  {script.__name__}: {elapsed:.1f}s, process CPU {cpu:.0f}s; per version: {costs.summary(requests)}")
    return elapsed, cpu, servers, requests


def run(ctx: Context) -> None:
    total = ctx.scale(1000, 200)
    workers = operator_max_workers()
    bundle, uri = ctx.site_bundle()
    names = _names(total)

    # ---------------------------------------------------------------- the operator
    op_ns = ctx.ns("op", "tp")
    op = _prepare(ctx, op_ns)
    watcher = Watcher(ctx.env, "dver", op_ns)
    ctx.log(f"throughput: operator, {total} versions over {DEPLOYMENTS} Deployments")
    cpu_before = ctx.operator.cpu_seconds()
    own_cpu_before = ctx.operator.own_cpu_seconds()
    servers_before, bench_before = ctx.env.server_cpu_seconds(), time.process_time()
    before = costs.Snapshot.take(ctx.env, watcher)
    t0 = time.monotonic()
    parallel(lambda pair: op.create_version(pair[1], static_spec(pair[0], uri, bundle.sha256)), names, CREATORS)
    created = time.monotonic() - t0
    try:
        watcher.wait(lambda: _all_terminal(watcher, total), timeout=TIMEOUT, what="all versions terminal")
        op_elapsed = max(t for t, n, s in watcher.events if s.get("state") in ("ready", "failed")) - t0
        op_cpu = ctx.operator.cpu_seconds() - cpu_before
        op_own_cpu = ctx.operator.own_cpu_seconds() - own_cpu_before
        op_servers = _spent(servers_before, ctx.env.server_cpu_seconds(), time.process_time() - bench_before)
        ctx.operator.settle()  # kopf's trailing writes belong to these versions too
        op_requests = costs.per_version(before, costs.Snapshot.take(ctx.env, watcher), total)
    finally:
        watcher.close()
    failed = watcher.count(lambda s: s.get("state") == "failed")
    ctx.log(f"  per version (operator): {costs.summary(op_requests)}")
    ctx.log(
        f"  operator: {op_elapsed:.1f}s ({created:.1f}s to create), {failed} failed, operator CPU {op_cpu:.0f}s (process alone {op_own_cpu:.1f}s)"
    )

    # The operator's memory with these 1,000 versions, once it is quiet (benchmark 5).
    ctx.operator.settle()
    ctx.results.details.setdefault("rss", {})["1000_continuous"] = ctx.operator.rss_mib()
    ctx.results.details["throughput_ns"] = op_ns

    # ---------------------------------------------------------------- the baseline, the contract's floor
    base_elapsed, base_cpu, base_servers, base_requests = _plain_script(ctx, "base", Baseline, names, uri, bundle.sha256)
    floor_elapsed, floor_cpu, floor_servers, floor_requests = _plain_script(
        ctx, "floor", ContractFloor, names, uri, bundle.sha256
    )

    ctx.results.details["throughput"] = {
        "versions": total,
        "operator_s": op_elapsed,
        "operator_create_s": created,
        "operator_failed": failed,
        "operator_cpu_s": op_cpu,
        "operator_process_cpu_s": op_own_cpu,
        "baseline_s": base_elapsed,
        "baseline_workers": workers,
        "baseline_process_cpu_s": base_cpu,
        "contract_floor_s": floor_elapsed,
        "contract_floor_process_cpu_s": floor_cpu,
        "api_requests_per_version": {"operator": op_requests, "baseline": base_requests, "contract_floor": floor_requests},
        "server_cpu_s": {"operator": op_servers, "baseline": base_servers, "contract_floor": floor_servers},
    }
    ctx.log(f"  CPU of the rest of the machine, operator: {_per_version(op_servers, total)}")
    ctx.log(f"  CPU of the rest of the machine, baseline: {_per_version(base_servers, total)}")
    ctx.log(f"  CPU of the rest of the machine, contract floor: {_per_version(floor_servers, total)}")
    ctx.results.add(
        Row(
            "2",
            f"throughput, {total} versions / {DEPLOYMENTS} Deployments",
            total / op_elapsed,
            "versions/s",
            total / base_elapsed,
            f"plain script, {workers} threads",
            target="≥0.8× plain script",
            ok=base_elapsed / op_elapsed >= 0.8 and failed == 0,
            better="higher",
            note=f"{op_elapsed:.0f} s vs {base_elapsed:.0f} s" + (f"; {failed} FAILED" if failed else ""),
        )
    )
    ctx.results.add(
        Row(
            "2",
            "operator CPU per version (throughput run; process tree: operator, fork server, ingestion workers)",
            op_cpu / total * 1000,
            "ms",
            base_cpu / total * 1000,
            "plain script's whole process, incl. its creates",
        )
    )
    ctx.results.add(
        Row(
            "2",
            "operator CPU per version (throughput run; the operator process alone, without ingestion workers)",
            op_own_cpu / total * 1000,
            "ms",
            base_cpu / total * 1000,
            "plain script's whole process, incl. its creates and ingestion",
        )
    )
    ctx.results.add(
        Row(
            "2",
            "CPU per version of everything else (throughput run: API server, etcd, S3 server, the benchmark's creates and watch, ...)",
            sum(op_servers.values()) / total * 1000,
            "ms",
            sum(base_servers.values()) / total * 1000,
            "the same for the plain script (its own process excluded: above)",
            note=_per_version(op_servers, total) + " vs " + _per_version(base_servers, total),
        )
    )
    ctx.results.add(
        Row(
            "2",
            "CPU per version of the whole machine (throughput run: the two rows above added)",
            (op_cpu + sum(op_servers.values())) / total * 1000,
            "ms",
            (base_cpu + sum(base_servers.values())) / total * 1000,
            "plain script and everything else",
        )
    )
    ctx.results.add(
        Row(
            "2",
            "throughput of the contract's floor (plain script + a gapless number, the labels, an Event: the least any "
            "implementation of the contract does)",
            total / floor_elapsed,
            "versions/s",
            total / base_elapsed,
            f"plain script, {workers} threads",
            better="higher",
            note=f"operator ÷ floor {floor_elapsed / op_elapsed:.2f}; whole machine "
            f"{(floor_cpu + sum(floor_servers.values())) / total * 1000:.1f} ms per version; "
            f"{floor_requests['requests_total']:.2f} requests per version",
        )
    )
    ctx.results.add(
        Row(
            "2",
            "API requests per version (throughput run, besides the create)",
            op_requests["requests_total"],
            "",
            base_requests["requests_total"],
            "plain script",
            note=f"watch events to the operator: {op_requests['watch_events_operator']}",
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


def _sharded_run(ctx: Context, count: int, leases: str, total: int) -> dict[str, float]:
    bundle, uri = ctx.site_bundle()
    processes = [
        Operator(
            ctx.env,
            ctx.operator.log_path.with_name(f"{ctx.operator.log_path.stem}-{count}shards-{i}.log"),
            extra_env={"MIOSA_SHARDS": str(count), "MIOSA_SHARD_INDEX": str(i), "MIOSA_LEASE_NAMESPACE": leases},
            index=1 + i,
        )
        for i in range(count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.settle()
    ns = ctx.ns("op", f"sh{count}")
    objects = _prepare(ctx, ns)
    watcher = Watcher(ctx.env, "dver", ns)
    cpu = [p.cpu_seconds() for p in processes]
    ctx.log(f"sharded: {count} process(es), {total} versions")
    t0 = time.monotonic()
    try:
        parallel(lambda pair: objects.create_version(pair[1], static_spec(pair[0], uri, bundle.sha256)), _names(total), CREATORS)
        watcher.wait(lambda: _all_terminal(watcher, total), timeout=TIMEOUT, what=f"all versions terminal ({count} shards)")
    finally:
        watcher.close()
        used = [p.cpu_seconds() - c for p, c in zip(processes, cpu, strict=True)]
        for process in processes:
            process.stop()
    elapsed = max(t for t, n, s in watcher.events if s.get("state") in ("ready", "failed")) - t0
    failed = watcher.count(lambda s: s.get("state") == "failed")
    ctx.log(f"  {count} shard(s): {elapsed:.1f} s, {total / elapsed:.1f} versions/s, CPU per process {used}, {failed} failed")
    ctx.env.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return {"seconds": elapsed, "failed": failed, "cpu_s_per_process": used}  # type: ignore[dict-item]


def sharded(ctx: Context, counts: tuple[int, ...] = (1, 2, 4)) -> None:
    """10: the throughput workload against 1, 2 and 4 operator processes (``MIOSA_SHARDS``).

    Each run gets a fresh namespace and fresh processes (the benchmark's usual operator is
    stopped meanwhile); the clock is the same as in 2.  Reference: the single process of the
    same series, and the plain script of 2 in the same run.
    """
    total = ctx.scale(1000, 200)
    leases = ctx.ns("op", "leases")
    ctx.env.create_namespace(leases)
    ctx.operator.stop()
    details: dict[str, dict[str, float]] = {}
    try:
        for count in counts:
            details[str(count)] = _sharded_run(ctx, count, leases, total)
    finally:
        ctx.operator.start()
    ctx.results.details["sharded"] = details
    rates = {count: total / details[str(count)]["seconds"] for count in counts}
    plain = ctx.results.details.get("throughput", {}).get("baseline_s")
    for count in counts:
        failed = details[str(count)]["failed"]
        note = f"plain script of 2: {total / plain:.1f}/s (ratio {rates[count] * plain / total:.2f})" if plain else ""
        ctx.results.add(
            Row(
                "10",
                f"throughput, {count} shard(s), {total} versions / {DEPLOYMENTS} Deployments",
                rates[count],
                "versions/s",
                rates[counts[0]],
                "1 shard, same series",
                better="higher",
                ok=None if not failed else False,
                note=note + (f"; {failed:.0f} FAILED" if failed else ""),
            )
        )
