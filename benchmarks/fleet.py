"""5, 6, 7: the operator's memory, the plugin's listing and a GC sweep with 10,000 versions.

The fleet: one namespace (``mb-op-fleet-…``, watched by the operator) with 50 static
Deployments of 200 versions each.  Versions are created **while the operator is stopped**
and given a terminal status by the benchmark itself (created → building → ready, the
transitions the API server allows; every 50th ``failed``; the five before the newest
``archived``), with ids, numbers, the operator's own labels, attribution (4 workspaces,
so one Deployment + workspace selects 50 versions) and ``readyAt`` spread over the last
60 days; 1 % carry ``deploy.miosa.io/retain``.  Their artifact URIs point at objects that
do not exist (nothing reads them: the sweep over them is a dry run).  Each Deployment's
status carries an id, a ``liveVersion`` (the newest) and a history of six promotions;
``spec.promotedVersion`` stays empty, so no workload is started for them.

Then, for the first 1,000 and again for all 10,000: the operator is started and left to
adopt them (kopf runs the resume/create handler once per object; the version controller
sees a terminal state and writes nothing, kopf records the object as handled in an
annotation) until every version carries kopf's annotation and the operator is quiet:
"first sight" RSS and its peak.  Then it is restarted: "watched" RSS is read from
``/proc/<pid>/status`` once its CPU use has stayed below 5 % for 3 s (plus 6 s for kopf's
idle per-object workers to exit) -- the steady state of an operator that watches that many
versions.  The other benchmark namespaces are deleted first, so the operator watches
exactly these versions.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from miosa_operator.api.models import DeploymentVersionSpec
from miosa_operator.domain.ids import new_deployment_id, new_version_id
from miosa_operator.domain.labels import version_labels

from .common import Row, percentile
from .context import Context
from .env import Operator
from .objects import Objects, parallel, static_spec

DEPLOYMENTS = 50
PER_DEPLOYMENT = 200
WORKSPACES = 4
LIVE_WINDOW = 6  # the newest six were live once: five archived + the live one
WORKERS = 32


def now_utc() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _mb(mib: float) -> float:
    return mib * 2**20 / 1e6


def record_idle(ctx: Context) -> None:
    ctx.results.details.setdefault("rss", {})["idle"] = ctx.operator.rss_mib()
    ctx.log(f"  operator RSS idle: {_mb(ctx.results.details['rss']['idle']):.1f} MB")


# ------------------------------------------------------------------------------- fixture


class Fleet:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ns = ctx.ns("op", "fleet")
        self.objects = Objects(ctx.api(), self.ns)
        self.dep_ids = {d: new_deployment_id() for d in range(DEPLOYMENTS)}
        self.now = now_utc()

    @staticmethod
    def dep(d: int) -> str:
        return f"fleet-{d:02d}"

    @staticmethod
    def name(d: int, n: int) -> str:
        return f"fleet-{d:02d}-v{n:04d}"

    def ready_at(self, n: int) -> datetime:
        return self.now - timedelta(days=(PER_DEPLOYMENT - n) * 60 / PER_DEPLOYMENT, minutes=5)

    def create_deployments(self) -> None:
        self.ctx.env.create_namespace(self.ns)

        def one(d: int) -> None:
            self.objects.create_deployment(self.dep(d), kind="static")
            live = PER_DEPLOYMENT
            history = [
                {
                    "version": self.name(d, n),
                    "versionNumber": n,
                    "action": "promote",
                    "actor": "ci-bot",
                    "time": _iso(self.ready_at(n) + timedelta(hours=1)),
                    "reason": "",
                }
                for n in range(live - LIVE_WINDOW + 1, live + 1)
            ]
            self.objects.patch_status(
                "deployments",
                self.dep(d),
                {
                    "id": self.dep_ids[d],
                    "lastVersionNumber": PER_DEPLOYMENT,
                    "liveVersion": self.name(d, live),
                    "liveVersionNumber": live,
                    "history": history,
                },
            )

        parallel(one, list(range(DEPLOYMENTS)), 8)

    def _version(self, pair: tuple[int, int]) -> None:
        d, n = pair
        name = self.name(d, n)
        digest = hashlib.sha256(name.encode()).hexdigest()
        spec = static_spec(self.dep(d), f"s3://miosa-uploads/bench/fleet/{name}.tar.zst", digest)
        spec["attribution"] = {
            "createdBy": "ci-bot",
            "externalWorkspaceId": f"ws-{n % WORKSPACES}",
            "externalUserId": f"user-{n % 10}",
            "externalProjectId": f"proj-{d:02d}",
        }
        labels = version_labels(DeploymentVersionSpec.model_validate(spec))
        labels["deploy.miosa.io/version-number"] = str(n)
        annotations = {"deploy.miosa.io/retain": "true"} if n % 100 == 37 else None
        self.objects.create_version(name, spec, labels=labels, annotations=annotations)
        ver_id = new_version_id()
        ready_at = self.ready_at(n)
        prefix = f"s3://miosa-releases/{self.ns}/{self.dep_ids[d]}/{ver_id}"
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": "Pending",
            "message": "fixture",
            "observedGeneration": 1,
            "lastTransitionTime": _iso(ready_at),
        }
        patch = self.objects.patch_status
        patch(
            "deploymentversions",
            name,
            {
                "id": ver_id,
                "tenantId": self.ns,
                "deploymentId": self.dep_ids[d],
                "versionNumber": n,
                "state": "created",
                "observedGeneration": 1,
                "conditions": [condition],
            },
        )
        patch("deploymentversions", name, {"state": "building"})
        if n % 50 == 25:
            patch(
                "deploymentversions",
                name,
                {
                    "state": "failed",
                    "conditions": [{**condition, "reason": "ChecksumMismatch", "message": "fixture: bundle sha256 differs"}],
                },
            )
            return
        patch(
            "deploymentversions",
            name,
            {
                "state": "ready",
                "readyAt": _iso(ready_at),
                "artifactUri": f"{prefix}/dist.tar.zst",
                "artifactSha256": digest,
                "buildLogUri": f"{prefix}/build.log",
                "artifactManifest": {"files": 49, "totalBytes": 1_745_509, "entrypoint": "index.html"},
                "conditions": [{**condition, "status": "True", "reason": "Ready", "message": "fixture: ready"}],
            },
        )
        if PER_DEPLOYMENT - LIVE_WINDOW < n < PER_DEPLOYMENT:
            patch(
                "deploymentversions",
                name,
                {
                    "state": "archived",
                    "promotedAt": _iso(ready_at + timedelta(hours=1)),
                    "archivedAt": _iso(ready_at + timedelta(days=1)),
                },
            )
        elif n == PER_DEPLOYMENT:
            patch("deploymentversions", name, {"promotedAt": _iso(ready_at + timedelta(hours=1))})

    def handled_count(self) -> int:
        """Versions kopf has recorded as handled (its last-handled-configuration annotation)."""
        key = "kopf.zalando.org/last-handled-configuration"
        return sum(1 for v in self.objects.list_versions() if key in (v["metadata"].get("annotations") or {}))

    def create_versions(self, deployments: range) -> float:
        pairs = [(d, n) for d in deployments for n in range(1, PER_DEPLOYMENT + 1)]
        start = time.monotonic()
        parallel(self._version, pairs, WORKERS)
        return time.monotonic() - start


# ------------------------------------------------------------------------------- runs


class _PeakRss:
    """Samples the operator's RSS twice a second until stopped."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.peak, self._stop = ctx, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak = max(self.peak, self.ctx.operator.rss_mib())
            except (OSError, AssertionError, RuntimeError):
                pass

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def _writes(before: dict, after: dict) -> dict[str, float]:
    writes: dict[str, float] = {}
    for (verb, resource, sub), count in after.items():
        delta = count - before.get((verb, resource, sub), 0)
        if verb in ("PATCH", "POST", "PUT", "DELETE") and delta > 0 and resource not in ("leases", "nodes"):
            writes[f"{verb} {resource}{'/' + sub if sub else ''}"] = delta
    return writes


def bare_kopf_rss(ctx: Context) -> float:
    """The RSS baseline: a bare kopf operator with a no-op handler, started the same way."""
    log = ctx.operator.log_path.with_name(ctx.operator.log_path.stem + "-bare-kopf.log")
    bare = Operator(ctx.env, log, command=[sys.executable, "-m", "benchmarks.bare_kopf"], ready_marker="bare kopf configured")
    bare.start()
    try:
        bare.settle()
        time.sleep(6)  # kopf's idle per-object workers exit after 5 s
        return bare.rss_mib()
    finally:
        bare.stop()


def _adopt(ctx: Context, fleet: Fleet, count: int) -> None:
    """First sight of ``count`` versions (until kopf has recorded every one as handled), then a
    restart: the steady state of an operator that watches them."""
    rss = ctx.results.details.setdefault("rss", {})
    before = ctx.env.apiserver_requests()
    peak = _PeakRss(ctx)
    start = time.monotonic()
    ctx.operator.start()
    deadline = start + 900
    # Counted from here: the bare kopf baseline of an earlier step annotated the versions it saw.
    already = fleet.handled_count()
    while (handled := fleet.handled_count()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the operator handled only {handled} of {count} versions in 900 s")
        if handled == already and time.monotonic() - start > 30:
            break  # an operator that does not watch settled versions never adopts them
        time.sleep(10)
    ctx.operator.settle()
    adopt_s = time.monotonic() - start
    rss[f"{count}_first_sight"] = ctx.operator.rss_mib()
    rss[f"{count}_first_sight_peak"] = peak.stop()
    writes = _writes(before, ctx.env.apiserver_requests())
    errors = ctx.operator.log_path.read_text(errors="replace").rsplit("===== benchmark operator start", 1)[-1].count("[ERROR")
    ctx.operator.stop()
    peak = _PeakRss(ctx)
    start = time.monotonic()
    ctx.operator.start()
    ctx.operator.settle()
    time.sleep(6)  # kopf's idle per-object workers exit after 5 s
    restart_s = time.monotonic() - start
    rss[f"{count}_steady"] = ctx.operator.rss_mib()
    rss[f"{count}_steady_peak"] = peak.stop()
    ctx.operator.stop()
    rss[f"{count}_bare_kopf"] = bare_kopf_rss(ctx)
    ctx.results.details.setdefault("adoption", {})[str(count)] = {
        "first_sight_s": round(adopt_s, 1),
        "adopted": handled,
        "first_sight_api_writes": writes,
        "first_sight_error_log_lines": errors,
        "restart_until_quiet_s": round(restart_s, 1),
    }
    ctx.log(
        f"  {count} versions: first sight {adopt_s:.0f} s, RSS {_mb(rss[f'{count}_first_sight']):.0f} MB "
        f"(peak {_mb(rss[f'{count}_first_sight_peak']):.0f}), {errors} error log lines, writes {writes}; "
        f"after a restart RSS {_mb(rss[f'{count}_steady']):.0f} MB (peak {_mb(rss[f'{count}_steady_peak']):.0f})"
    )


def run(ctx: Context, wanted: set[str]) -> None:
    ctx.operator.stop()
    ctx.log("fleet: deleting the other benchmark namespaces (the operator must watch only the fleet)")
    ctx.env.delete_bench_namespaces(wait=300)
    fleet = Fleet(ctx)
    fleet.create_deployments()
    if "5" in wanted and "idle" not in ctx.results.details.get("rss", {}):
        ctx.operator.start()
        ctx.operator.settle()
        record_idle(ctx)
        ctx.operator.stop()
    if "5" in wanted:
        ctx.results.details["rss"]["idle_bare_kopf"] = bare_kopf_rss(ctx)
    first = range(0, DEPLOYMENTS // 10)
    secs = fleet.create_versions(first)
    ctx.log(f"fleet: {len(first) * PER_DEPLOYMENT} versions created with terminal status in {secs:.0f}s")
    if "5" in wanted:
        _adopt(ctx, fleet, len(first) * PER_DEPLOYMENT)
    secs = fleet.create_versions(range(DEPLOYMENTS // 10, DEPLOYMENTS))
    total = DEPLOYMENTS * PER_DEPLOYMENT
    ctx.log(f"fleet: {total} versions in {fleet.ns} ({secs:.0f}s for the last {total - len(first) * PER_DEPLOYMENT})")
    if "5" in wanted:
        _adopt(ctx, fleet, total)
        rss = {k: _mb(v) for k, v in ctx.results.details["rss"].items()}
        add = ctx.results.add
        bare = "bare kopf, no-op handler"
        add(Row("5", "operator RSS, idle (no versions)", rss["idle"], "MB", rss["idle_bare_kopf"], bare))
        if "1000_continuous" in rss:
            add(
                Row(
                    "5",
                    "operator RSS, after benchmark 2 (1,000 built, same process)",
                    rss["1000_continuous"],
                    "MB",
                    rss["idle"],
                    "idle operator",
                )
            )
        add(
            Row(
                "5",
                "operator RSS, 1,000 versions watched (restart)",
                rss["1000_steady"],
                "MB",
                rss["1000_bare_kopf"],
                bare,
                note=f"first sight of the 1,000: {rss['1000_first_sight']:.0f} MB, peak {rss['1000_first_sight_peak']:.0f} MB",
            )
        )
        add(
            Row(
                "5",
                "operator RSS, 10,000 versions watched (restart)",
                rss["10000_steady"],
                "MB",
                rss["10000_bare_kopf"],
                bare,
                target="≤150 MB",
                ok=rss["10000_steady"] <= 150,
                note=f"peak during the restart {rss['10000_steady_peak']:.0f} MB",
            )
        )
        add(
            Row(
                "5",
                "operator RSS, first sight of 9,000 new versions (10,000 total), peak",
                rss["10000_first_sight_peak"],
                "MB",
                rss["10000_bare_kopf"],
                bare + " (watching)",
                target="≤400 MB peak",
                ok=rss["10000_first_sight_peak"] <= 400,
                note=f"after it: {rss['10000_first_sight']:.0f} MB",
            )
        )
    ctx.operator.start()  # 6 and 7 run next to an idle operator, as in a cluster
    if "6" in wanted:
        plugin(ctx, fleet)
    if "7" in wanted:
        sweep_dry_run(ctx, fleet)
    if "8" in wanted:
        from . import httpapi

        httpapi.run(ctx, fleet)
    if "1" in wanted:
        latency_with_history(ctx, fleet)  # last: it adds versions to the fleet
        measure_etcd(ctx, fleet)


def etcd_sizes(ctx: Context, fleet: Fleet, names: dict[str, str]) -> dict[str, int]:
    """Bytes etcd stores for each named object (its value under /registry/…, as the API server
    wrote it: JSON with managedFields), read through etcd's own HTTP gateway."""
    import base64
    import urllib.request

    sizes = {}
    for label, key in names.items():
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{ctx.env.spec.etcd_port}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            kvs = json.loads(response.read()).get("kvs") or []
        if kvs:
            sizes[label] = len(base64.b64decode(kvs[0]["value"]))
    return sizes


def measure_etcd(ctx: Context, fleet: Fleet) -> None:
    """One object of each kind, as stored: a fixture version, one the operator built, a Deployment."""
    prefix = "/registry/deploy.miosa.io"
    sizes = etcd_sizes(
        ctx,
        fleet,
        {
            "version, ready (fixture)": f"{prefix}/deploymentversions/{fleet.ns}/{Fleet.name(3, 100)}",
            "version, archived (fixture)": f"{prefix}/deploymentversions/{fleet.ns}/{Fleet.name(3, PER_DEPLOYMENT - 1)}",
            "version, built by the operator": f"{prefix}/deploymentversions/{fleet.ns}/fresh-new0",
            "Deployment with a 6-entry history": f"{prefix}/deployments/{fleet.ns}/{Fleet.dep(3)}",
        },
    )
    ctx.results.details["etcd_bytes"] = sizes
    ctx.log(f"  etcd bytes per object: {sizes}")
    built = sizes.get("version, built by the operator")
    if built:
        ctx.results.add(
            Row(
                "5",
                "etcd bytes per DeploymentVersion (built by the operator, ready)",
                built,
                "B",
                sizes.get("version, ready (fixture)"),
                "fixture version without the operator's writes",
                note=f"Deployment: {sizes.get('Deployment with a 6-entry history')} B",
            )
        )


def latency_with_history(ctx: Context, fleet: Fleet) -> None:
    """1 again, next to 10,000 versions: a Deployment with 200 versions against a new one."""
    from .latency import _sample
    from .watch import Watcher

    bundle, uri = ctx.site_bundle()
    fleet.objects.create_deployment("fresh", kind="static")
    watcher = Watcher(ctx.env, "dver", fleet.ns)
    samples = ctx.scale(10, 4)
    times: dict[str, list[float]] = {"history": [], "fresh": []}
    try:
        _sample(fleet.objects, watcher, "fresh-warm", static_spec("fresh", uri, bundle.sha256))
        for i in range(samples):
            for key, dep in (("history", Fleet.dep(0)), ("fresh", "fresh")):
                time.sleep(0.3)
                times[key].append(_sample(fleet.objects, watcher, f"{dep}-new{i}", static_spec(dep, uri, bundle.sha256)))
    finally:
        watcher.close()
    ctx.results.details["latency_with_history"] = times
    old, new = percentile(times["history"], 50), percentile(times["fresh"], 50)
    ctx.results.add(
        Row(
            "1",
            f"apply→ready p50, Deployment with 200 versions, namespace with 10,000 ({samples}×)",
            old * 1000,
            "ms",
            new * 1000,
            "new Deployment, same namespace",
        )
    )


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[:500]}")
    return elapsed, result.stdout


def _count(output: str) -> int | None:
    try:
        data = json.loads(output)
    except ValueError:
        return None
    if isinstance(data, list):
        return len(data)
    for key in ("items", "versions", "data"):
        if isinstance(data, dict) and isinstance(data.get(key), list):
            return len(data[key])
    return None


def plugin(ctx: Context, fleet: Fleet) -> None:
    dep, ws = Fleet.dep(7), "ws-2"
    exe = Path(sys.executable).parent / "kubectl-miosa"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "miosa_operator.plugin.cli"]
    plugin_cmd = [*base, "versions", "list", dep, "--workspace", ws, "-n", fleet.ns, "-o", "json"]
    selector = f"deploy.miosa.io/deployment={dep},deploy.miosa.io/external-workspace-id={ws}"
    raw_cmd = [
        str(ctx.env.bin_dir / "kubectl"),
        "--kubeconfig",
        ctx.env.kubeconfig,
        "get",
        "dver",
        "-n",
        fleet.ns,
        "-l",
        selector,
        "-o",
        "json",
    ]
    startup_cmd = [sys.executable, "-c", "import miosa_operator.plugin.cli"]
    env = ctx.env.process_env()
    runs = ctx.scale(7, 3)
    times: dict[str, list[float]] = {"plugin": [], "kubectl": [], "python import": []}
    counts: dict[str, int | None] = {}
    _time(plugin_cmd, env)  # warm caches (page cache, API server's watch cache)
    for _ in range(runs):
        t, out = _time(plugin_cmd, env)
        times["plugin"].append(t)
        counts["plugin"] = _count(out)
        t, out = _time(raw_cmd, env)
        times["kubectl"].append(t)
        counts["kubectl"] = _count(out)
        times["python import"].append(_time(startup_cmd, env)[0])
    ctx.results.details["plugin"] = {"times_s": times, "counts": counts, "command": " ".join(plugin_cmd[len(base) - 1 :])}
    p, k, imp = (percentile(times[x], 50) for x in ("plugin", "kubectl", "python import"))
    ctx.results.add(
        Row(
            "6",
            f"kubectl miosa versions list -o json ({counts.get('plugin')} of 10,000), p50",
            p * 1000,
            "ms",
            k * 1000,
            "kubectl get dver -l … -o json",
            note=f"of which Python start + imports {imp * 1000:.0f} ms",
        )
    )


def sweep_dry_run(ctx: Context, fleet: Fleet) -> None:
    from miosa_operator.controllers.retention import Collector
    from miosa_operator.domain.retention import Policy
    from miosa_operator.kube.client import Kube
    from miosa_operator.kube.events import KubeEvents
    from miosa_operator.settings import Settings
    from miosa_operator.store.router import StoreRouter

    when = fleet.now + timedelta(days=10)
    kube = Kube(ctx.api())
    collector = Collector(kube, StoreRouter.from_settings(Settings.load()), Policy(), KubeEvents(kube))
    times = []
    for _ in range(ctx.scale(3, 1)):
        start = time.perf_counter()
        report = collector.sweep(dry_run=True, now=when)
        times.append(time.perf_counter() - start)
    checked, eligible = len(report.plan.decisions), len(report.plan.collect)
    # Baseline: the same three LISTs a sweep needs, as plain JSON, nothing else.
    from miosa_operator.api import meta

    base_times = []
    for _ in range(len(times)):
        start = time.perf_counter()
        for plural in (meta.VERSION_PLURAL, meta.DEPLOYMENT_PLURAL, meta.RETENTION_PLURAL):
            kube.list(plural)
        base_times.append(time.perf_counter() - start)
    cli = [str(Path(sys.executable).parent / "miosa-operator"), "gc", "--dry-run", "--now", _iso(when), "-o", "json"]
    cli_s, out = _time(cli, {**ctx.env.process_env(), "MIOSA_RELEASES_URI": "s3://miosa-releases"})
    cli_report = json.loads(out)
    ctx.results.details["gc_dry_run"] = {
        "checked": checked,
        "eligible": eligible,
        "api_calls": report.api_calls,
        "seconds": times,
        "kept_because": report.plan.kept_because(),
        "cli_seconds": cli_s,
        "cli_api_calls": cli_report.get("apiCalls"),
        "cli_collected": len(cli_report.get("collected", [])),
        "baseline_list_seconds": base_times,
    }
    best, base = min(times), min(base_times)
    ctx.results.add(
        Row(
            "7",
            f"sweep --dry-run, {checked:,} versions ({eligible:,} eligible), in-process",
            best,
            "s",
            base,
            "the same 3 LISTs, plain JSON",
            target="<10 s",
            ok=best < 10,
            note=f"{report.api_calls} API calls (Kube.calls)",
        )
    )
    ctx.results.add(
        Row(
            "7",
            "miosa-operator gc --dry-run -o json (whole command)",
            cli_s,
            "s",
            base,
            "the same 3 LISTs, plain JSON",
            target="<10 s",
            ok=cli_s < 10,
            note=f"{cli_report.get('apiCalls')} API calls",
        )
    )
