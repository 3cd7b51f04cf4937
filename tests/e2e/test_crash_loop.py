"""A crash loop ends by itself: the real operator is killed (SIGKILL, as the OOM killer or a
dying node would) in the middle of the same version's ingestion, again and again; after
MIOSA_MAX_INTERRUPTED_ATTEMPTS (3) such deaths the version ends ``failed`` with
``IngestionAborted`` and an event instead of taking the operator down once more. Graceful
stops (SIGTERM, as in an upgrade) in the middle of an ingestion never count.

The ingestion is stretched by a proxy in front of the real S3 server that sends the bundle
slowly, so that there is an ingestion in progress to interrupt."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from .conftest import UPLOADS_BUCKET, Environment, OperatorProcess
from .faults import S3Proxy
from .helpers import Objects, condition, sha256, static_spec, wait_until
from .slots import SPARE_PORTS

ATTEMPTS = 3


@pytest.fixture
def slow_store(env: Environment, operator: OperatorProcess) -> Iterator[S3Proxy]:
    upstream = int(env.values["MIOSA_S3_ENDPOINT"].rsplit(":", 1)[1])
    proxy = S3Proxy(upstream, SPARE_PORTS[1])
    proxy.set_mode("forward", throttle=256 << 10)
    saved = dict(operator.extra_env)
    operator.stop()
    operator.extra_env = {**saved, "MIOSA_S3_ENDPOINT": proxy.endpoint}
    operator.start()
    yield proxy
    operator.stop()
    operator.extra_env = saved
    operator.start()
    proxy.stop()


def attempt_of(objects: Objects, name: str) -> dict[str, Any]:
    return (objects.version(name).get("status") or {}).get("buildAttempts") or {}


def interrupt_repeatedly(objects: Objects, name: str, stop: Callable[[], None], start: Callable[[], None]) -> list[str]:
    """Wait for an ingestion of ``name`` to be in progress under a new operator run, then stop
    the operator, ``ATTEMPTS`` times; the run ids seen."""
    runs: list[str] = []
    for _ in range(ATTEMPTS):
        running = wait_until(
            lambda: (attempt_of(objects, name).get("running") or "") not in ("", *runs) and attempt_of(objects, name)["running"],
            timeout=180,
            what=f"an ingestion of {name} in progress under a new operator run",
        )
        runs.append(running)
        stop()
        start()
    return runs


def bundle() -> bytes:
    import hostile_bundles as hostile  # tests/: a plain tar of random bytes, ~8 s at 256 KiB/s per attempt

    return hostile.tar_of({"index.html": b"<h1>slow</h1>", "noise.bin": os.urandom(2 << 20)})


def test_killed_mid_ingestion_three_times_the_version_ends_ingestion_aborted(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any, slow_store: S3Proxy
) -> None:
    tenant = tenants("a")
    objects = Objects(tenant.api, tenant.namespace)
    objects.create_deployment("site")
    data = bundle()
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=f"{tenant.namespace}/slow.tar", Body=data)
    objects.create_version("site-v1", static_spec("site", f"s3://{UPLOADS_BUCKET}/{tenant.namespace}/slow.tar", sha256(data)))

    runs = interrupt_repeatedly(objects, "site-v1", operator.kill, operator.start)
    assert len(set(runs)) == ATTEMPTS

    body = objects.wait_state("site-v1", "failed", "ready", timeout=180)
    ready = condition(body, "Ready") or {}
    assert (body["status"]["state"], ready.get("reason")) == ("failed", "IngestionAborted"), ready
    assert body["status"]["buildAttempts"]["interrupted"] == ATTEMPTS and "running" not in body["status"]["buildAttempts"]
    core = client.CoreV1Api(api)

    def aborted_event() -> bool:  # kopf posts events in the background
        events = core.list_namespaced_event(tenant.namespace, field_selector="involvedObject.name=site-v1").items
        return any(e.reason == "IngestionAborted" and e.type == "Warning" for e in events)

    wait_until(aborted_event, timeout=60, what="a Warning event IngestionAborted")
    assert operator.proc is not None and operator.proc.poll() is None  # and the operator runs on


def test_graceful_stops_mid_ingestion_never_count(
    env: Environment, operator: OperatorProcess, tenants: Any, slow_store: S3Proxy
) -> None:
    tenant = tenants("a")
    objects = Objects(tenant.api, tenant.namespace)
    objects.create_deployment("site")
    data = bundle()
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=f"{tenant.namespace}/slow.tar", Body=data)
    objects.create_version("site-v1", static_spec("site", f"s3://{UPLOADS_BUCKET}/{tenant.namespace}/slow.tar", sha256(data)))

    interrupt_repeatedly(objects, "site-v1", operator.stop, operator.start)  # SIGTERM, as an upgrade does
    attempts = attempt_of(objects, "site-v1")
    assert attempts.get("interrupted", 0) == 0

    slow_store.set_mode("forward")  # full speed again
    body = objects.wait_state("site-v1", "ready", "failed", timeout=240)
    assert body["status"]["state"] == "ready" and body["status"]["buildAttempts"].get("interrupted", 0) == 0
