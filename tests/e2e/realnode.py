"""The real node, from the tests' side (``hack/node.sh`` builds it; README "The real node").

* ``steer_to_real_node``: a namespace whose pods must run for real.  The node is tainted and
  labelled ``node.miosa.io/real``; the namespace gets a default node selector and a default
  toleration through the API server's PodNodeSelector and PodTolerationRestriction admission
  plugins, so the operator's pods land there without the operator knowing anything about it.
* Static server pods download their release from the operator's artifact endpoint with a
  projected ServiceAccount token; for the suite's operator, on the host's loopback, the
  ``operator`` fixture points ``MIOSA_ARTIFACTS_URL`` at the node's gateway, which
  hack/node.sh forwards to the host (``MIOSA_NODE_HOST_PORTS``).
* HTTP to pods: the host reaches pod addresses directly on the node's bridge.  ClusterIPs are
  not proxied (no kube-proxy, see hack/node.sh), so a Service is reached through its ready
  EndpointSlice addresses, which is also what proves the Service selects the serving pods.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from .conftest import Environment
from .helpers import GROUP, VERSION, Objects, wait_until

TESTAPP_IMAGE = "miosa.local/testapp:1"
"""hack/images/testapp: HEALTH_STATUS, LISTEN=never and MESSAGE are read from the environment."""
OPERATOR_IMAGE = "ghcr.io/miosa/miosa-operator:0.1.0"


@dataclass(frozen=True)
class RealNode:
    name: str
    label: str
    address: str


def real_node(env: Environment) -> RealNode:
    values = env.values
    if "MIOSA_REAL_NODE" not in values:
        pytest.fail(
            "the environment has no real node: start it with `hack/env.sh up --real-node` "
            "(make test-env does) or let the suite start its own"
        )
    return RealNode(values["MIOSA_REAL_NODE"], values["MIOSA_REAL_NODE_LABEL"], values["MIOSA_REAL_NODE_ADDRESS"])


def wait_node_ready(api: client.ApiClient, node: RealNode, timeout: float = 120) -> None:
    def ready() -> bool:
        conditions = client.CoreV1Api(api).read_node(node.name).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_until(ready, timeout=timeout, what=f"node {node.name} Ready")


def steer_to_real_node(api: client.ApiClient, namespace: str, node: RealNode) -> None:
    toleration = {"key": node.label, "operator": "Exists", "effect": "NoSchedule"}
    annotations = {
        "scheduler.alpha.kubernetes.io/node-selector": f"{node.label}=true",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration]),
    }
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"annotations": annotations}})


# ----------------------------------------------------------------------------- promotion


def promote(objects: Objects, deployment: str, version: str) -> None:
    objects.custom.patch_namespaced_custom_object(
        GROUP, VERSION, objects.namespace, "deployments", deployment, {"spec": {"promotedVersion": version}}
    )


def wait_live(objects: Objects, deployment: str, version: str, timeout: float = 180) -> dict[str, Any]:
    def live() -> dict[str, Any] | None:
        body = objects.deployment(deployment)
        status = body.get("status") or {}
        return body if status.get("liveVersion") == version and not status.get("rollout") else None

    return wait_until(live, timeout=timeout, what=f"{version} live on {deployment}")


# ----------------------------------------------------------------------------- HTTP


def ready_endpoints(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """``address:port`` of every ready endpoint of ``service``."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    found = []
    for item in slices.items:
        port = (item.ports or [None])[0]
        for endpoint in item.endpoints or []:
            if port and endpoint.conditions and endpoint.conditions.ready:
                found += [f"{address}:{port.port}" for address in endpoint.addresses]
    return sorted(found)


def http_get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of the first answer; retries only while nothing listens yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (ConnectionError, urllib.error.URLError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def served(api: client.ApiClient, namespace: str, service: str, path: str = "/") -> set[bytes]:
    """What every ready endpoint of ``service`` answers on ``path`` (200s only)."""
    answers = set()
    for endpoint in ready_endpoints(api, namespace, service):
        status, body = http_get(f"http://{endpoint}{path}")
        assert status == 200, (endpoint, status, body)
        answers.add(body)
    return answers


def kubelet_events(api: client.ApiClient, namespace: str, node: RealNode, name_prefix: str) -> list[client.CoreV1Event]:
    """Events the real node's kubelet reported about pods whose name starts with ``name_prefix``."""
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return [
        e
        for e in events
        if e.involved_object.kind == "Pod"
        and e.involved_object.name.startswith(name_prefix)
        and e.source is not None
        and e.source.component == "kubelet"
        and e.source.host == node.name
    ]
