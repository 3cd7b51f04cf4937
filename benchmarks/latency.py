"""1. Apply → Ready latency of a static version with a ~1 MiB bundle, versions one after another.

Per sample: ``t0`` just before the create call, ``t1`` when a watch (in a separate process)
first sees ``status.state`` ready (or failed: counted as an error).  The baseline is timed
the same way; it starts processing as soon as its create call returns (it needs no watch
of its own).  Operator and baseline samples alternate (op, base, base, op, …) so that
noise from the shared machine falls on both.  A few warm-up versions of each are not counted.

Afterwards, ten more versions of each are applied with a pause, to count the API requests
and watch events one version costs (``costs``: the API server's own counters).
"""

from __future__ import annotations

import time
from typing import Any

from . import costs
from .baseline import Baseline
from .common import Row, percentile
from .context import Context
from .env import RELEASES_BUCKET
from .objects import Objects, static_spec
from .watch import Watcher

TERMINAL = ("ready", "failed")
PAUSE = 0.3  # lets the operator's trailing writes (kopf's annotations) finish before the next sample


def _sample(objects: Objects, watcher: Watcher, name: str, spec: dict[str, Any], after_create: Any = None) -> float:
    t0 = time.monotonic()
    objects.create_version(name, spec)
    if after_create is not None:
        after_create(name)
    t1 = watcher.wait_first(name, lambda s: s.get("state") in TERMINAL, after=t0, timeout=120)
    state = watcher.latest[name].get("state")
    if state != "ready":
        raise RuntimeError(f"{objects.namespace}/{name} ended {state}")
    return t1 - t0


def run(ctx: Context) -> None:
    samples = ctx.scale(50, 12)
    warmup = 3
    bundle, uri = ctx.site_bundle()
    spec = static_spec("site", uri, bundle.sha256)
    op_ns, base_ns = ctx.ns("op", "lat"), ctx.ns("base", "lat")
    for ns in (op_ns, base_ns):
        ctx.env.create_namespace(ns)
        Objects(ctx.api(), ns).create_deployment("site", kind="static")
    op, base = Objects(ctx.api(), op_ns), Objects(ctx.api(), base_ns)
    op_watch, base_watch = Watcher(ctx.env, "dver", op_ns), Watcher(ctx.env, "dver", base_ns)
    baseline = Baseline(ctx.api(), ctx.s3, RELEASES_BUCKET)
    process = lambda name: baseline.process(base_ns, name)  # noqa: E731
    ctx.log(
        f"latency: {warmup} warm-up + {samples} samples each, bundle {bundle.size / 2**20:.2f} MiB ({bundle.members} members)"
    )
    try:
        for i in range(warmup):
            _sample(op, op_watch, f"warm-{i}", spec)
            _sample(base, base_watch, f"warm-{i}", spec, process)
        op_times, base_times = [], []
        for i in range(samples):
            order = ("op", "base") if i % 2 == 0 else ("base", "op")
            for who in order:
                time.sleep(PAUSE)
                if who == "op":
                    op_times.append(_sample(op, op_watch, f"v{i}", spec))
                else:
                    base_times.append(_sample(base, base_watch, f"v{i}", spec, process))
        # API requests and watch events per version.
        per_version: dict[str, dict[str, Any]] = {}
        for who, objects, watcher, hook in (("operator", op, op_watch, None), ("baseline", base, base_watch, process)):
            time.sleep(2)
            before = costs.Snapshot.take(ctx.env, watcher)
            count = 10
            for i in range(count):
                _sample(objects, watcher, f"count-{i}", spec, hook)
                time.sleep(1.5 if who == "operator" else 0.2)
            time.sleep(1)
            per_version[who] = costs.per_version(before, costs.Snapshot.take(ctx.env, watcher), count)
    finally:
        op_watch.close()
        base_watch.close()
    ctx.results.details["latency"] = {
        "operator_s": op_times,
        "baseline_s": base_times,
        "api_requests_per_version": per_version,
        "bundle": {"bytes": bundle.size, "members": bundle.members, "uncompressed": bundle.uncompressed},
    }
    for q, limit in ((50, 1.3), (95, 1.5)):
        value, ref = percentile(op_times, q), percentile(base_times, q)
        ctx.results.add(
            Row(
                "1",
                f"apply→ready p{q} ({samples} versions, 1 MiB bundle)",
                value * 1000,
                "ms",
                ref * 1000,
                "plain script",
                target=f"≤{limit}× baseline",
                ok=value <= limit * ref,
            )
        )
    for who, delta in per_version.items():
        ctx.log(f"  per version ({who}): {costs.summary(delta)}")
    op_costs, base_costs = per_version["operator"], per_version["baseline"]
    ctx.results.add(
        Row(
            "1",
            "API requests per version (besides the create)",
            op_costs["requests_total"],
            "",
            base_costs["requests_total"],
            "plain script",
            note=f"{op_costs['changes']} vs {base_costs['changes']} changes of the version",
        )
    )
    events = op_costs["watch_events_operator"]
    ctx.results.add(
        Row(
            "1",
            "watch events per version to the operator (versions + Deployments)",
            events["deploymentversions"] + events["deployments"],
            "",
            base_costs["changes"],
            "changes of a version, plain script (what an unfiltered watch gets)",
            note=f"{events['deploymentversions']} version + {events['deployments']} Deployment events",
        )
    )
