"""What one version costs the API server: requests and the watch events they cause.

Requests come from ``apiserver_request_total`` (every client; the benchmarks run one side at
a time while they count, and watches are not counted).  Watch events come from
``apiserver_watch_events_total``, which counts every event sent to every watcher: the
operator's, the benchmark's own (``watch.Watcher``, one namespace, no selector) and
kube-controller-manager's (its garbage collector and quota controller watch every resource
without a selector: one event per change, cluster-wide).  So, over a window in which only
the measured namespace changes:

* operator's DeploymentVersion events = all - the benchmark watch's - the controller
  manager's, where the controller manager's = the benchmark watch's (both see every change);
* operator's Deployment events = all ÷ 2 (nobody else watches Deployments in that window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .watch import Watcher

IGNORED = ("leases", "nodes", "events")
VERSIONS, DEPLOYMENTS = "deploy.miosa.io/deploymentversions", "deploy.miosa.io/deployments"


@dataclass
class Snapshot:
    requests: dict[tuple[str, str, str], float]
    watch: dict[str, float]
    watcher_events: int

    @classmethod
    def take(cls, env: Any, watcher: Watcher) -> Snapshot:
        return cls(env.apiserver_requests(), env.apiserver_watch_events(), watcher.watch_events())


def per_version(before: Snapshot, after: Snapshot, versions: int) -> dict[str, Any]:
    requests: dict[str, float] = {}
    for (verb, resource, sub), count in sorted(after.requests.items()):
        delta = count - before.requests.get((verb, resource, sub), 0)
        # Discovery (/api, /apis, /openapi) is other clients' background noise; watches are not requests.
        if delta > 0 and verb != "WATCH" and resource and resource not in IGNORED:
            requests[f"{verb} {resource}{'/' + sub if sub else ''}"] = round(delta / versions, 2)
    seen = after.watcher_events - before.watcher_events
    dver = after.watch.get(VERSIONS, 0) - before.watch.get(VERSIONS, 0)
    deps = after.watch.get(DEPLOYMENTS, 0) - before.watch.get(DEPLOYMENTS, 0)
    return {
        "requests": requests,
        "requests_total": round(sum(v for k, v in requests.items() if not k.startswith("POST deploymentversions")), 2),
        "changes": round(seen / versions, 2),
        "watch_events_operator": {
            "deploymentversions": round((dver - 2 * seen) / versions, 2),
            "deployments": round(deps / 2 / versions, 2),
        },
    }


def summary(costs: dict[str, Any]) -> str:
    events = costs["watch_events_operator"]
    return (
        f"{costs['requests_total']} API requests/version besides the create ({costs['requests']}); "
        f"{costs['changes']} changes of the version; watch events to the operator: "
        f"{events['deploymentversions']} version + {events['deployments']} Deployment"
    )
