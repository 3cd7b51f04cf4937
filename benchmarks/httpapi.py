"""8: the HTTP API's list of 50 of 10,000 versions, beside ``kubectl get -l`` for the same objects.

Runs on the 10,000-version fleet of ``fleet.py`` (50 Deployments x 200 versions, 4 workspaces):
``GET /api/v1/deployments/{dep id}/versions?external_workspace_id=ws-2&limit=50`` returns the
50 versions of one Deployment and one end-customer, newest first, as a reader ServiceAccount
of the fleet's namespace (a real bound token; TokenReview + SubjectAccessReview).

Measured, alternating, in the same run:

* the API over a kept-alive HTTP connection (how a platform's backend calls it), with the
  default authorisation cache (10 s) and with it off (every request pays a TokenReview and
  two SubjectAccessReviews);
* ``kubectl get dver -l deploy.miosa.io/deployment=…,deploy.miosa.io/external-workspace-id=ws-2 -o json``
  (a process per call, as a script would run it);
* the same LIST made in-process with the Kubernetes client (the API server's own time).

The API processes run as the environment's admin identity (their own calls are only the
reviews and the id lookup); the caller is the reader ServiceAccount.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import Row, percentile
from .context import Context

PORT_OFFSETS = (47, 48)  # the API processes listen next to the environment's API server port (16543 -> 16590, 16591)
WORKSPACE = "ws-2"


def _start_api(ctx: Context, port: int, cache_seconds: float, log_path: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "miosa-operator"
    env = {
        **ctx.env.process_env(),
        "MIOSA_API_PORT": str(port),
        "MIOSA_API_AUTH_CACHE_SECONDS": str(cache_seconds),
        "MIOSA_API_MAX_PAGE_SIZE": "100",
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen([str(exe), "api"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _reader_token(ctx: Context, namespace: str) -> str:
    kubectl = ctx.env.kubectl
    kubectl(
        "-n",
        namespace,
        "create",
        "role",
        "bench-reader",
        "--verb=get,list",
        "--resource=deployments.deploy.miosa.io,deploymentversions.deploy.miosa.io",
    )
    kubectl("-n", namespace, "create", "serviceaccount", "bench-reader")
    kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "bench-reader",
        "--role=bench-reader",
        f"--serviceaccount={namespace}:bench-reader",
    )
    return kubectl("-n", namespace, "create", "token", "bench-reader", "--duration=2h").stdout.strip()


def run(ctx: Context, fleet: Any) -> None:
    import httpx
    from kubernetes import client

    # The listing involves no operator.  One that is adopting 10,000 new versions saturates the
    # API server (its watch cache lagged by seconds in a first attempt, and a LIST broke off),
    # so 8 runs with the operator stopped: both sides then meet the same quiet API server.
    ctx.operator.stop()
    dep_name = fleet.dep(7)
    dep_id = fleet.dep_ids[7]
    token = _reader_token(ctx, fleet.ns)
    log_path = ctx.env.spec.env_dir / "logs" / f"api-bench-{ctx.run_id}.log"
    ports = [ctx.env.spec.apiserver_port + offset for offset in PORT_OFFSETS]
    servers = {"cached": _start_api(ctx, ports[0], 10.0, log_path), "uncached": _start_api(ctx, ports[1], 0.0, log_path)}
    urls = {"cached": f"http://127.0.0.1:{ports[0]}", "uncached": f"http://127.0.0.1:{ports[1]}"}
    selector = f"deploy.miosa.io/deployment={dep_name},deploy.miosa.io/external-workspace-id={WORKSPACE}"
    kubectl_cmd = [
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
    custom = client.CustomObjectsApi(ctx.api())
    times: dict[str, list[float]] = {"cached": [], "uncached": [], "kubectl": [], "list": []}
    counts: dict[str, int] = {}
    try:
        http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        for name, url in urls.items():
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {name} API did not start; see {log_path}")
                time.sleep(0.2)
        params = {"external_workspace_id": WORKSPACE, "limit": 50}

        def api_call(kind: str) -> float:
            start = time.perf_counter()
            answer = http.get(f"{urls[kind]}/api/v1/deployments/{dep_id}/versions", params=params)
            elapsed = time.perf_counter() - start
            answer.raise_for_status()
            counts[kind] = len(answer.json()["data"])
            return elapsed

        def kubectl_call() -> float:
            start = time.perf_counter()
            result = subprocess.run(kubectl_cmd, capture_output=True, text=True, timeout=60, env=ctx.env.process_env())
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                raise RuntimeError(result.stderr[:500])
            counts["kubectl"] = result.stdout.count('"kind": "DeploymentVersion"')
            return elapsed

        def list_call() -> float:
            start = time.perf_counter()
            items = custom.list_namespaced_custom_object(
                "deploy.miosa.io", "v1alpha1", fleet.ns, "deploymentversions", label_selector=selector
            )["items"]
            counts["list"] = len(items)
            return time.perf_counter() - start

        for warm in (lambda: api_call("cached"), lambda: api_call("uncached"), kubectl_call, list_call):
            warm()
        samples = ctx.scale(40, 10)
        for _ in range(samples):
            times["cached"].append(api_call("cached"))
            times["uncached"].append(api_call("uncached"))
            times["kubectl"].append(kubectl_call())
            times["list"].append(list_call())
        http.close()
    finally:
        for proc in servers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=40)
    ctx.results.details["httpapi"] = {"times_s": times, "counts": counts, "samples": samples}
    ms = {k: (percentile(v, 50) * 1000, percentile(v, 95) * 1000) for k, v in times.items()}
    kubectl_label = "kubectl get dver -l … -o json"
    add = ctx.results.add
    for q, index in (("p50", 0), ("p95", 1)):
        add(
            Row(
                "8",
                f"HTTP API list {counts.get('cached')} of 10,000 (workspace filter), {q}",
                ms["cached"][index],
                "ms",
                ms["kubectl"][index],
                kubectl_label,
                target="≤ kubectl",
                ok=ms["cached"][index] <= ms["kubectl"][index],
            )
        )
    for q, index in (("p50", 0), ("p95", 1)):
        add(
            Row(
                "8",
                f"HTTP API list, authorisation cache off, {q}",
                ms["uncached"][index],
                "ms",
                ms["kubectl"][index],
                kubectl_label,
                target="≤ kubectl",
                ok=ms["uncached"][index] <= ms["kubectl"][index],
            )
        )
    add(
        Row(
            "8",
            "the same LIST in-process (API server time), p50",
            ms["list"][0],
            "ms",
            ms["kubectl"][0],
            kubectl_label,
            note=f"p95 {ms['list'][1]:.1f} ms",
        )
    )
