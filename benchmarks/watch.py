"""A watch in a separate process, so that observing never competes for the benchmark's GIL.

``python -m benchmarks.watch KIND NAMESPACE`` prints one tab-separated line per event:
``<monotonic time> <name> <summary json>``; ``KIND`` is ``dver`` (our DeploymentVersions),
``mdep`` (our Deployments) or ``deploy`` (apps/v1 Deployments).  CLOCK_MONOTONIC is
system-wide on Linux, so the parent compares these times with its own ``time.monotonic()``.
The first line is ``<time> - {"watching": true}`` once the watch is open.

``Watcher`` is the parent side: it starts the process, collects the lines in a thread and
answers "when did X first look like Y".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

GROUP, VERSION = "deploy.miosa.io", "v1alpha1"
Summary = dict[str, Any]


def summarize(kind: str, obj: dict[str, Any]) -> Summary:
    status = obj.get("status") or {}
    if kind == "dver":
        return {"state": status.get("state")}
    if kind == "mdep":
        return {"live": status.get("liveVersion"), "rollout": bool(status.get("rollout"))}
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    return {
        "gen": obj["metadata"].get("generation", 0),
        "obs": status.get("observedGeneration", 0),
        "updated": status.get("updatedReplicas") or 0,
        "available": status.get("availableReplicas") or 0,
        "total": status.get("replicas") or 0,
        "replicas": spec.get("replicas", 1),
        "template": (template.get("annotations") or {}),
    }


def rolled_out(s: Summary, annotation: str, value: str) -> bool:
    """An apps/v1 Deployment summary: every replica runs the template with ``annotation=value``."""
    return (
        s.get("template", {}).get(annotation) == value
        and s["obs"] >= s["gen"]
        and s["updated"] >= s["replicas"]
        and s["available"] >= s["replicas"]
        and s["total"] <= s["replicas"]
    )


def _main(kind: str, namespace: str) -> None:
    from kubernetes import client, config, watch

    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    api = client.ApiClient()
    if kind in ("dver", "mdep"):
        plural = "deploymentversions" if kind == "dver" else "deployments"
        custom = client.CustomObjectsApi(api)

        def list_fn(**kw: Any) -> Any:
            return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kw)

        def initial() -> tuple[str, list[dict[str, Any]]]:
            result = list_fn()
            return result["metadata"]["resourceVersion"], result["items"]
    else:
        apps = client.AppsV1Api(api)

        def list_fn(**kw: Any) -> Any:
            return apps.list_namespaced_deployment(namespace, **kw)

        def initial() -> tuple[str, list[dict[str, Any]]]:
            result = apps.list_namespaced_deployment(namespace)
            return result.metadata.resource_version, [api.sanitize_for_serialization(i) for i in result.items]

    rv, items = initial()
    out = sys.stdout
    for item in items:
        out.write(f"{time.monotonic():.6f}\t{item['metadata']['name']}\t{json.dumps(summarize(kind, item))}\n")
    out.write(f"{time.monotonic():.6f}\t-\t{json.dumps({'watching': True})}\n")
    out.flush()
    while True:
        w = watch.Watch()
        try:
            for event in w.stream(list_fn, resource_version=rv, timeout_seconds=600, allow_watch_bookmarks=False):
                obj = event["object"]
                if not isinstance(obj, dict):
                    obj = api.sanitize_for_serialization(obj)
                now = time.monotonic()
                rv = obj["metadata"].get("resourceVersion", rv)
                if event["type"] == "DELETED":  # counted (watch events), not a state
                    out.write(f"{now:.6f}\t-\t{json.dumps({'deleted': obj['metadata']['name']})}\n")
                    out.flush()
                    continue
                out.write(f"{now:.6f}\t{obj['metadata']['name']}\t{json.dumps(summarize(kind, obj))}\n")
                out.flush()
        except Exception as exc:  # noqa: BLE001 - an expired resourceVersion: list again
            if "410" in str(exc) or "Expired" in str(exc):
                rv, _ = initial()
            else:
                time.sleep(0.5)


class Watcher:
    def __init__(self, env: Any, kind: str, namespace: str) -> None:
        self.kind, self.namespace = kind, namespace
        self.events: list[tuple[float, str, Summary]] = []
        self.latest: dict[str, Summary] = {}
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.watch", kind, namespace],
            env=env.process_env(),
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(_repo()),
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.wait(lambda: any(n == "-" for _, n, _ in self.events), timeout=60, what="watch to open")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            t, name, raw = line.rstrip("\n").split("\t", 2)
            summary = json.loads(raw)
            with self._cond:
                self.events.append((float(t), name, summary))
                self.latest[name] = summary
                self._cond.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what} not met within {timeout:.0f}s")
                self._cond.wait(min(left, 1.0))

    def first(self, name: str, predicate: Callable[[Summary], bool], after: float = 0.0) -> float | None:
        with self._cond:
            for t, n, s in self.events:
                if n == name and t >= after and predicate(s):
                    return t
        return None

    def wait_first(self, name: str, predicate: Callable[[Summary], bool], after: float, timeout: float) -> float:
        found: list[float] = []

        def done() -> bool:
            for t, n, s in reversed(self.events):
                if t < after:
                    break
                if n == name and predicate(s):
                    found.append(t)
                    return True
            return False

        self.wait(done, timeout, what=f"{self.kind}/{name}")
        # The earliest matching event after ``after``.
        return self.first(name, predicate, after) or found[0]

    def watch_events(self) -> int:
        """Events this watch has received since it opened (the initial LIST not counted)."""
        with self._cond:
            opened = next(i for i, (_, n, s) in enumerate(self.events) if n == "-" and s.get("watching"))
            return len(self.events) - opened - 1

    def count(self, predicate: Callable[[Summary], bool]) -> int:
        with self._cond:
            return sum(1 for s in self.latest.values() if predicate(s))

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(timeout=10)


def _repo() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
