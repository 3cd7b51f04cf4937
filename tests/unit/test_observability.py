"""Metrics, the journal and the log filters, driven through the real controllers on FakeKube."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from miosa_operator.api import meta
from miosa_operator.api.conditions import Reason
from miosa_operator.controllers.common import Failure, Retry
from miosa_operator.controllers.deployments import DeploymentController
from miosa_operator.controllers.static_build import Built, Rejected
from miosa_operator.observability import context, instrument, logs, metrics
from miosa_operator.observability.census import VersionCensus
from miosa_operator.observability.journal import Journal, JournaledKube
from miosa_operator.render.live import StaticServer
from miosa_operator.settings import Settings
from miosa_operator.sharding import Shard
from miosa_operator.store import FileStore

from .fakes import WORKLOADS, FakeClock, FakeKube, RecordingEvents

Obj = dict[str, Any]
NS = "tenant-a"
VERSIONS, DEPLOYMENTS = meta.VERSION_PLURAL, meta.DEPLOYMENT_PLURAL


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Moved:
    """Sample values before, and how far they moved since."""

    def __init__(self, *names: tuple[str, dict[str, str]]) -> None:
        self.names = names
        self.before = [sample(n, **labels) for n, labels in names]

    def deltas(self) -> list[float]:
        return [sample(n, **labels) - b for (n, labels), b in zip(self.names, self.before, strict=True)]


# ---------------------------------------------------------------------------- census


def version_body(name: str, state: str | None, kind: str = "static", uid: str | None = None, vid: str | None = None) -> Obj:
    status = {"state": state, "id": vid} if state else {}
    return {
        "metadata": {"namespace": NS, "name": name, "uid": uid or f"uid-{name}"},
        "spec": {"kind": kind},
        "status": status,
    }


def test_census_counts_by_state_and_kind_and_forgets_deleted() -> None:
    now = [1000.0]
    census = VersionCensus(clock=lambda: now[0])
    census.observe(None, version_body("a", "building"))
    census.observe(None, version_body("b", "ready", "dynamic", vid="ver_B"))
    census.observe("ADDED", version_body("c", None))
    now[0] = 1030.0
    census.observe("MODIFIED", version_body("a", "building"))  # same state: keeps its since
    assert census.counts() == {("building", "static"): 1, ("ready", "dynamic"): 1, ("unset", "static"): 1}
    assert census.oldest_seconds("building") == 30.0 and census.oldest_seconds("created") == 0.0
    assert census.version_id(NS, "b") == "ver_B" and census.version_id(NS, "zz") is None
    census.observe("MODIFIED", version_body("a", "ready"))
    assert census.oldest_seconds("building") == 0.0
    census.observe("DELETED", version_body("c", None))  # deleted in flight: gone
    assert len(census) == 2 and census.version_id(NS, "c") is None


def test_a_settled_version_leaving_the_watch_stays_counted() -> None:
    """The operator watches versions in flight only: settling ends in a DELETED event whose
    body is the version before it settled; the journal has already recorded the new state."""
    census = VersionCensus()
    census.observe(None, version_body("a", "building"))
    census.observe("MODIFIED", version_body("a", "ready", vid="ver_A"))  # as the journal records it
    census.observe("DELETED", version_body("a", "building"))  # out of the selection
    assert census.counts() == {("ready", "static"): 1} and census.version_id(NS, "a") == "ver_A"
    census.observe("DELETED", version_body("b", "building"))  # never known, deleted: nothing
    census.forget_namespace(NS)
    assert len(census) == 0


def test_a_shard_counts_only_its_own_versions() -> None:
    """The singletons' holder archives other shards' versions; its journal must not count them."""
    shard = Shard(0, 2)
    uids = [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % (1 << 128))) for i in range(1, 100)]  # spread, like real uids
    mine = next(uid for uid in uids if shard.owns(uid))
    theirs = next(uid for uid in uids if not shard.owns(uid))
    census = VersionCensus(owns=shard.owns)
    census.observe("MODIFIED", version_body("a", "archived", uid=mine))
    census.observe("MODIFIED", version_body("b", "archived", uid=theirs))
    assert census.seed([version_body("c", "ready", uid=theirs)]) == 1
    assert census.counts() == {("archived", "static"): 1} and census.version_id(NS, "b") is None


def test_settled_versions_are_seeded_from_a_listing() -> None:
    census = VersionCensus()
    census.observe("MODIFIED", version_body("a", "archived"))
    assert census.seed([version_body("a", "ready"), version_body("b", "failed", "dynamic")]) == 2
    assert census.counts() == {("archived", "static"): 1, ("failed", "dynamic"): 1}  # what it knew wins


def test_census_collector_exports_every_state_and_kind() -> None:
    census = VersionCensus()
    census.observe(None, version_body("a", "failed", "dynamic"))
    registry = CollectorRegistry()
    registry.register(metrics.CensusCollector(census))
    text = generate_latest(registry).decode()
    assert 'miosa_versions{kind="dynamic",state="failed"} 1.0' in text
    assert 'miosa_versions{kind="static",state="ready"} 0.0' in text
    assert text.count("miosa_versions{") == len(metrics.STATES) * len(metrics.KINDS)
    assert 'miosa_versions_oldest_seconds{state="building"} 0.0' in text


def test_metrics_endpoint_serves_the_registry_and_stops() -> None:
    census = VersionCensus()
    census.observe(None, version_body("a", "ready"))
    registry = CollectorRegistry()
    server = metrics.serve("127.0.0.1", 0, census, registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
            assert 'miosa_versions{kind="static",state="ready"} 1.0' in response.read().decode()
    finally:
        metrics.stop(server, registry)
    assert generate_latest(registry) == b""  # the census collector is unregistered


# ---------------------------------------------------------------------------- rollouts through the journal


class Cluster:
    """A Deployment controller writing through the journal to FakeKube."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube(clock=self.clock)
        self.census = VersionCensus()
        self.events = RecordingEvents()
        journaled = JournaledKube(self.kube, Journal(self.census))
        self.controller = DeploymentController(
            journaled,
            Settings.defaults(),
            self.events,
            StaticServer("static:1", "http://127.0.0.1:8081"),
            clock=self.clock,  # type: ignore[arg-type]
        )

    def version(self, name: str, number: int, dep: str = "site") -> None:
        self.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": meta.VERSION_KIND,
                "metadata": {"name": name, "namespace": NS, "labels": {meta.LABEL_DEPLOYMENT: dep}},
                "spec": {"deploymentRef": {"name": dep}, "kind": "dynamic", "runtime": {"image": "app:1", "port": 8080}},
            },
        )
        vid = f"ver_{number:026d}"
        for status in (
            {"state": "created", "id": vid},
            {"state": "building"},
            {"state": "ready", "versionNumber": number, "deploymentId": "dep_" + "0" * 26},
        ):
            self.kube.patch_status(VERSIONS, NS, name, status)
        self.census.observe(None, self.kube.peek(VERSIONS, NS, name) or {})

    def deployment(self, name: str = "site", **spec: Any) -> None:
        body = {"apiVersion": meta.API_VERSION, "kind": meta.DEPLOYMENT_KIND, "metadata": {"name": name, "namespace": NS}}
        self.kube.create(DEPLOYMENTS, {**body, "spec": {"kind": "dynamic", **spec}})
        # The incarnation that numbered the versions above (Auto considers only its own).
        self.kube.patch_status(DEPLOYMENTS, NS, name, {"id": "dep_" + "0" * 26, "ownedObjects": []})

    def promote(self, version: str, name: str = "site") -> None:
        self.kube.patch(DEPLOYMENTS, NS, name, {"spec": {"promotedVersion": version}})

    def reconcile(self, name: str = "site") -> bool:
        """One handler call, as kopf makes it; True when it asked to be called again."""
        body = self.kube.get(DEPLOYMENTS, NS, name) or {}
        with context.reconciling(body):
            try:
                self.controller.reconcile(body)
            except Retry:
                return True
        return False

    def available(self) -> None:
        for plural, ns, name in list(self.kube.objects):
            if plural == WORKLOADS:
                self.kube.mark_available(ns, name)

    def settle(self, seconds_per_step: float = 2.0) -> None:
        for _ in range(10):
            if not self.reconcile():
                return
            self.clock.advance(seconds_per_step)
            self.available()
        raise AssertionError("did not settle")


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    c.version("site-v1", 1)
    c.version("site-v2", 2)
    c.deployment()
    return c


def test_promote_and_rollback_are_counted_once_and_timed(cluster: Cluster) -> None:
    rollouts = Moved(
        ("miosa_rollouts_total", {"action": "promote", "outcome": "live"}),
        ("miosa_rollouts_total", {"action": "rollback", "outcome": "live"}),
        ("miosa_rollout_duration_seconds_count", {"action": "promote"}),
        ("miosa_rollout_duration_seconds_sum", {"action": "promote"}),
        ("miosa_rollout_duration_seconds_count", {"action": "rollback"}),
    )
    cluster.promote("site-v1")
    cluster.settle()
    cluster.promote("site-v2")
    cluster.settle()
    for _ in range(3):  # steady state: nothing more is counted
        cluster.reconcile()
    cluster.promote("site-v1")
    cluster.settle()
    promote_live, rollback_live, promote_count, promote_sum, rollback_count = rollouts.deltas()
    assert (promote_live, rollback_live, promote_count, rollback_count) == (2, 1, 2, 1)
    assert promote_sum == 4.0  # each promotion: started, 2 s later available and complete


def test_a_rollout_resumed_by_a_restarted_operator_is_timed_from_its_start(cluster: Cluster) -> None:
    moved = Moved(("miosa_rollout_duration_seconds_sum", {"action": "promote"}))
    cluster.promote("site-v1")
    assert cluster.reconcile()  # started, not yet available
    cluster.clock.advance(40)  # the operator restarts meanwhile: no memory of the start
    cluster.available()
    assert not cluster.reconcile()
    assert moved.deltas() == [40.0]


def test_a_reverted_rollout_is_counted_as_reverted_and_timed_as_revert(cluster: Cluster) -> None:
    cluster.promote("site-v1")
    cluster.settle()
    moved = Moved(
        ("miosa_rollouts_total", {"action": "promote", "outcome": "reverted"}),
        ("miosa_rollout_duration_seconds_count", {"action": "revert"}),
        ("miosa_rollouts_total", {"action": "promote", "outcome": "live"}),
    )
    cluster.promote("site-v2")
    assert cluster.reconcile()
    cluster.clock.advance(timedelta(seconds=301))  # past progressDeadlineSeconds, never available
    assert not cluster.reconcile()
    assert cluster.reconcile() is False  # held after the revert: nothing more counted
    assert moved.deltas() == [1, 1, 0]


def test_a_failed_status_write_is_not_journaled(cluster: Cluster) -> None:
    from miosa_operator.kube.client import TransientApiError

    moved = Moved(("miosa_rollouts_total", {"action": "promote", "outcome": "live"}))
    cluster.promote("site-v1")
    assert cluster.reconcile()
    cluster.available()
    cluster.kube.inject("patch_status", TransientApiError("503"), when=lambda plural, **_: plural == DEPLOYMENTS)
    with pytest.raises(TransientApiError):
        cluster.reconcile()
    assert moved.deltas() == [0]
    assert not cluster.reconcile()
    assert moved.deltas() == [1]


def test_journal_lines_name_the_object_and_its_version_id(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="miosa_operator.journal")
    cluster.promote("site-v2")
    cluster.settle()
    started, complete = (r for r in caplog.records if "deployment tenant-a/site" in r.getMessage())
    assert "promote started: site-v2 (#2) replaces nothing" in started.getMessage()
    assert "promote of site-v2 (#2) complete after 2.0s: it is live" in complete.getMessage()
    for record in (started, complete):
        assert record.k8s_ref["name"] == "site" and record.version_id == "ver_" + "2".zfill(26)  # type: ignore[attr-defined]
    live = next(r for r in caplog.records if r.getMessage().endswith("went live"))
    assert live.k8s_ref["name"] == "site-v2" and live.version_id == "ver_" + "2".zfill(26)  # type: ignore[attr-defined]


def test_version_state_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="miosa_operator.journal")
    kube = FakeKube()
    journaled = JournaledKube(kube, Journal())
    kube.create(VERSIONS, {"metadata": {"name": "v", "namespace": NS}, "spec": {"deploymentRef": {"name": "d"}, "kind": "static",
                "artifact": {"uri": "s3://bucket/k.tar.gz", "sha256": "a" * 64}}})  # fmt: skip
    journaled.patch_status(VERSIONS, NS, "v", {"state": "created", "id": "ver_" + "1" * 26})
    journaled.patch_status(VERSIONS, NS, "v", {"state": "building"})
    failed = {"type": "Ready", "status": "False", "reason": "ChecksumMismatch", "message": "sha256 differs"}
    journaled.patch_status(VERSIONS, NS, "v", {"state": "failed", "conditions": [failed]})
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == "deploymentversion tenant-a/v is failed (ChecksumMismatch: sha256 differs)"
    assert all(r.version_id == "ver_" + "1" * 26 for r in caplog.records)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- wrappers


class Outcomes:
    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)

    def run(self, version: Any, prepared: Any, cancel: Any = None, niceness: int | None = None) -> Any:
        """StaticBuild.run's signature: the wrapper must pass every argument through."""
        assert prepared == "prepared" and niceness == 5
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_timed_static_build_counts_decided_runs_only() -> None:
    moved = Moved(
        ("miosa_ingestions_total", {"outcome": "ready", "reason": "Ready"}),
        ("miosa_ingestions_total", {"outcome": "failed", "reason": "ChecksumMismatch"}),
        ("miosa_ingestion_bytes_sum", {}),
        ("miosa_ingestion_duration_seconds_count", {"outcome": "ready"}),
    )
    built = Built({"artifactManifest": {"files": 2, "totalBytes": 1234, "entrypoint": "index.html"}})
    rejected = Rejected(Failure(Reason.CHECKSUM_MISMATCH, "differs"), None)
    build = instrument.TimedStaticBuild(Outcomes(Retry("store down"), built, rejected))
    with pytest.raises(Retry):
        build.run(None, "prepared", None, 5)
    assert build.run(None, "prepared", None, 5) is built and build.run(None, "prepared", niceness=5) is rejected
    assert moved.deltas() == [1, 1, 1234, 1]


def test_freed_bytes_and_sweeps(tmp_path: Path) -> None:
    store = FileStore(root=str(tmp_path))
    uri = f"file://{tmp_path}/rel/dist.tar.zst"
    store.put_bytes_if_absent(uri, b"x" * 500)
    moved = Moved(
        ("miosa_collected_bytes_total", {}),
        ("miosa_collector_runs_total", {"outcome": "success"}),
        ("miosa_collector_runs_total", {"outcome": "failure"}),
    )
    freed = instrument.FreedBytes(store)
    assert freed.delete(uri) and not freed.delete(uri)

    class Sweeper:
        def __init__(self) -> None:
            self.fail = False

        def sweep(self, *, dry_run: bool = False, **_: Any) -> str:
            if self.fail:
                raise RuntimeError("API down")
            return "report"

    sweeper = Sweeper()
    counted = instrument.CountedSweeps(sweeper)
    assert counted.sweep() == "report" and counted.sweep(dry_run=True) == "report"
    sweeper.fail = True
    with pytest.raises(RuntimeError):
        counted.sweep()
    assert moved.deltas() == [500, 1, 1]
    assert sample("miosa_collector_last_success_timestamp_seconds") > 0


def test_admission_decisions() -> None:
    def validate(**kwargs: Any) -> None:
        if kwargs["answer"] == "deny":
            raise kopf.AdmissionError("no", code=422)
        if kwargs["answer"] == "down":
            raise kopf.AdmissionError("cannot check", code=503)

    counted = instrument.admission_decisions("test", validate)
    moved = Moved(
        *(("miosa_webhook_decisions_total", {"webhook": "test", "decision": d}) for d in ("allowed", "denied", "unavailable"))
    )
    for answer in ("allow", "deny", "down", "deny"):
        try:
            counted(answer=answer)
        except kopf.AdmissionError:
            pass
    assert moved.deltas() == [1, 2, 1]


# ---------------------------------------------------------------------------- log lines


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    census = VersionCensus()
    census.observe(None, version_body("site-v3", "ready", vid="ver_THREE"))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.ObjectFields(census))
    handler.addFilter(logs.Redact(["very-secret-key-123", "short"]))
    logger = logging.getLogger("miosa_operator.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[Obj]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_inside_a_handler_call_carry_the_object(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    deployment = {"kind": "Deployment", "metadata": {"namespace": NS, "name": "site", "uid": "u1"},
                  "status": {"id": "dep_X", "liveVersion": "site-v3"}}  # fmt: skip
    with context.reconciling(deployment):
        logger.info("about the deployment")
    with context.reconciling(
        {"kind": "DeploymentVersion", "metadata": {"namespace": NS, "name": "site-v9"}, "status": {"id": "ver_NINE"}}
    ):
        logger.info("about a version")
    logger.info("about nothing")
    about_deployment, about_version, about_nothing = lines(stream)
    assert about_deployment["namespace"] == NS and about_deployment["name"] == "site" and about_deployment["kind"] == "Deployment"
    assert about_deployment["version_id"] == "ver_THREE"  # its live version, from the census
    assert about_deployment["severity"] == "info" and about_deployment["logger"] == "miosa_operator.test_logs"
    assert (about_version["name"], about_version["version_id"]) == ("site-v9", "ver_NINE")
    assert "namespace" not in about_nothing and about_nothing["message"] == "about nothing"


def test_secrets_never_reach_a_line(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_lines
    logger.info("connecting with %s", "very-secret-key-123")
    try:
        raise ValueError("bad key very-secret-key-123")
    except ValueError:
        logger.exception("failed")
    logger.info("short is too short to redact")
    text = stream.getvalue()
    assert "very-secret-key-123" not in text and text.count(logs.REDACTED) >= 2
    assert "short is too short" in text


def test_census_ignores_an_older_event_than_it_has() -> None:
    census = VersionCensus()
    newer = version_body("a", "ready", vid="ver_A") | {
        "metadata": {"namespace": NS, "name": "a", "uid": "u", "resourceVersion": "12"}
    }
    older = version_body("a", "building") | {"metadata": {"namespace": NS, "name": "a", "uid": "u", "resourceVersion": "11"}}
    census.observe("MODIFIED", newer)
    census.observe("MODIFIED", older)
    assert census.counts() == {("ready", "static"): 1} and census.version_id(NS, "a") == "ver_A"
