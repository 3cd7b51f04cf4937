"""3. Promote → live and rollback → live on kwok nodes, next to a plain apps/v1 rollout.

A static and a dynamic Deployment (replicas 2), two ready versions each.  After a first
promotion (not timed: it creates the workload), rounds of: promote v2 (``kubectl patch``
of ``spec.promotedVersion``, timed until ``status.liveVersion`` is v2 and no rollout is in
progress), then roll back to v1 the same way.  The reference is a plain apps/v1
Deployment with the same replicas, strategy (maxSurge 25 %, maxUnavailable 0) and kwok
nodes, whose pod-template annotation is patched; timed until every replica runs the new
template, is available, and the old pods are gone (the criterion the operator uses).
The operator runs with its default poll interval (``MIOSA_POLL_INTERVAL``, 2 s).
"""

from __future__ import annotations

import time

from kubernetes import client

from .common import Row, percentile
from .context import Context
from .objects import Objects, dynamic_spec, static_spec
from .watch import Watcher, rolled_out

REPLICAS = 2
ANNOTATION = "bench.miosa.io/revision"
VERSION_ID = "deploy.miosa.io/version-id"  # api.meta.ANNOTATION_VERSION_ID


def _plain_deployment(ns: str) -> dict:
    labels = {"app": "plain"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "plain", "namespace": ns},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION: "0"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/app:1.0",
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 2},
                        }
                    ],
                },
            },
        },
    }


def run(ctx: Context) -> None:
    rounds = ctx.scale(6, 2)
    ns = ctx.ns("op", "promo")
    ctx.env.create_namespace(ns)
    objects = Objects(ctx.api(), ns)
    bundle, uri = ctx.site_bundle()
    objects.create_deployment("site", kind="static", replicas=REPLICAS)
    objects.create_deployment("app", kind="dynamic", replicas=REPLICAS)
    for i in (1, 2):
        objects.create_version(f"site-v{i}", static_spec("site", uri, bundle.sha256))
        objects.create_version(f"app-v{i}", dynamic_spec("app", image=f"registry.example/app:{i}.0"))
    versions = Watcher(ctx.env, "dver", ns)
    deployments = Watcher(ctx.env, "mdep", ns)
    pods = Watcher(ctx.env, "deploy", ns)
    try:
        versions.wait(lambda: versions.count(lambda s: s.get("state") == "ready") >= 4, timeout=180, what="4 ready versions")

        ids = {name: objects.version(name)["status"]["id"] for name in ("site-v1", "site-v2", "app-v1", "app-v2")}
        breakdown: list[dict[str, float]] = []

        def switch(dep: str, version: str) -> float:
            t0 = time.monotonic()
            objects.patch_deployment(dep, {"spec": {"promotedVersion": version}})
            t1 = deployments.wait_first(dep, lambda s: s.get("live") == version and not s.get("rollout"), after=t0, timeout=180)
            # When did the workload itself finish rolling out?  The rest is the operator noticing.
            rolled = pods.first(dep, lambda s: rolled_out(s, VERSION_ID, ids[version]), after=t0)
            changed = pods.first(dep, lambda s: s.get("template", {}).get(VERSION_ID) == ids[version], after=t0)
            if rolled is not None and changed is not None:
                breakdown.append({"workload_patched": changed - t0, "workload_rolled_out": rolled - t0, "live": t1 - t0})
            return t1 - t0

        for dep in ("site", "app"):
            switch(dep, f"{dep}-v1")  # first rollout: creates the workload and the Service
        apps = client.AppsV1Api(ctx.api())
        apps.create_namespaced_deployment(ns, _plain_deployment(ns))
        pods.wait_first("plain", lambda s: rolled_out(s, ANNOTATION, "0"), after=0, timeout=120)

        def plain(revision: int) -> float:
            t0 = time.monotonic()
            patch = {"spec": {"template": {"metadata": {"annotations": {ANNOTATION: str(revision)}}}}}
            apps.patch_namespaced_deployment("plain", ns, patch)
            return pods.wait_first("plain", lambda s: rolled_out(s, ANNOTATION, str(revision)), after=t0, timeout=180) - t0

        times: dict[str, list[float]] = {k: [] for k in ("site promote", "site rollback", "app promote", "app rollback", "plain")}
        revision = 0
        ctx.log(f"promotion: {rounds} rounds of promote + rollback per kind, and {2 * rounds} plain rollouts")
        for _ in range(rounds):
            for dep in ("site", "app"):
                time.sleep(0.5)
                times[f"{dep} promote"].append(switch(dep, f"{dep}-v2"))
                time.sleep(0.5)
                times[f"{dep} rollback"].append(switch(dep, f"{dep}-v1"))
            for _ in range(2):
                time.sleep(0.5)
                revision += 1
                times["plain"].append(plain(revision))
    finally:
        for w in (versions, deployments, pods):
            w.close()
    ctx.results.details["promotion"] = {**times, "breakdown": breakdown}
    if breakdown:
        parts = {k: percentile([b[k] for b in breakdown], 50) for k in breakdown[0]}
        ctx.log(
            f"  operator switches, p50: workload patched after {parts['workload_patched']:.2f}s, "
            f"rolled out after {parts['workload_rolled_out']:.2f}s, status live after {parts['live']:.2f}s"
        )
    ref = percentile(times["plain"], 50)
    for key in ("site promote", "site rollback", "app promote", "app rollback"):
        kind = "static" if key.startswith("site") else "dynamic"
        action = key.split()[1]
        ctx.results.add(
            Row(
                "3",
                f"{action} → live, {kind}, p50 ({len(times[key])}×)",
                percentile(times[key], 50),
                "s",
                ref,
                "apps/v1 rollout alone",
                note=f"p95 {percentile(times[key], 95):.2f} s",
            )
        )
    ctx.log(f"  plain apps/v1 rollout: p50 {ref:.2f}s p95 {percentile(times['plain'], 95):.2f}s")
