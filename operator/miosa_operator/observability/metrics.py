"""The operator's Prometheus metrics (``prometheus_client``), served on a port of their own.

Every metric is declared here, with its labels; the rest of the package records through the
small functions below.  Label values come from closed sets only (see the package docstring):

| metric | labels | what |
|---|---|---|
| ``miosa_versions`` | state, kind | DeploymentVersions by state (gauge, from ``census``) |
| ``miosa_versions_oldest_seconds`` | state | age in its state of the version longest in created/building |
| ``miosa_ingestions_total`` | outcome, reason | static builds decided: ready, or failed with the reason |
| ``miosa_ingestion_duration_seconds`` | outcome | one static build, stream to stored release |
| ``miosa_ingestion_bytes`` | — | uncompressed bytes of each release stored |
| ``miosa_health_gates_total`` | outcome, reason | dynamic versions' health gates decided |
| ``miosa_health_gate_duration_seconds`` | outcome | verification workload created → decision |
| ``miosa_rollouts_total`` | action, outcome | rollouts ended: live, reverted, failed (no revert) or superseded (a new target first) |
| ``miosa_rollout_duration_seconds`` | action | rollout start → live (promote, rollback, auto) or → put back (revert) |
| ``miosa_collector_runs_total`` | outcome | retention sweeps, succeeded or failed |
| ``miosa_collector_last_success_timestamp_seconds`` | — | end of the last successful sweep |
| ``miosa_collected_versions_total`` | — | versions whose artifacts were collected |
| ``miosa_collected_bytes_total`` | — | bytes of artifacts deleted by the collector |
| ``miosa_handler_retries_total`` | handler, reason | reconciles that ended in a retry |
| ``miosa_webhook_decisions_total`` | webhook, decision | admission answers: allowed, denied, unavailable |

Reverts are ``miosa_rollouts_total{outcome="reverted"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .census import VersionCensus

log = logging.getLogger(__name__)

# Every state and kind, so a scrape shows zeros rather than missing series (alerts on absent
# series are easy to get wrong).
STATES = ("created", "building", "ready", "failed", "archived")
KINDS = ("static", "dynamic")
WAITING_STATES = ("created", "building")

SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
BYTES = tuple(float(1 << shift) for shift in range(10, 32, 2))  # 1 KiB … 1 GiB

INGESTIONS = Counter("miosa_ingestions", "Static versions built: ready, or failed with the reason.", ["outcome", "reason"])
INGESTION_SECONDS = Histogram(
    "miosa_ingestion_duration_seconds", "Duration of one static build (stream, verify, store).", ["outcome"], buckets=SECONDS
)
INGESTION_BYTES = Histogram("miosa_ingestion_bytes", "Uncompressed bytes of each stored release.", buckets=BYTES)
HEALTH_GATES = Counter("miosa_health_gates", "Health gates of dynamic versions decided.", ["outcome", "reason"])
HEALTH_GATE_SECONDS = Histogram(
    "miosa_health_gate_duration_seconds", "Verification workload created until the gate decided.", ["outcome"], buckets=SECONDS
)
ROLLOUTS = Counter("miosa_rollouts", "Rollouts ended: live, reverted, or failed without a revert.", ["action", "outcome"])
ROLLOUT_SECONDS = Histogram(
    "miosa_rollout_duration_seconds",
    "Rollout start until the version is live (promote, rollback, auto) or the previous one is back (revert).",
    ["action"],
    buckets=SECONDS,
)
COLLECTOR_RUNS = Counter("miosa_collector_runs", "Retention sweeps by outcome.", ["outcome"])
COLLECTOR_LAST_SUCCESS = Gauge("miosa_collector_last_success_timestamp_seconds", "When the last retention sweep succeeded.")
COLLECTED_VERSIONS = Counter("miosa_collected_versions", "Versions whose artifacts the collector removed.")
COLLECTED_BYTES = Counter("miosa_collected_bytes", "Bytes of artifacts the collector deleted.")
HANDLER_RETRIES = Counter("miosa_handler_retries", "Reconciles that ended in a retry, by reason.", ["handler", "reason"])
WEBHOOK_DECISIONS = Counter("miosa_webhook_decisions", "Admission webhook answers.", ["webhook", "decision"])


class CensusCollector(Collector):
    """``miosa_versions`` and ``miosa_versions_oldest_seconds``, computed at scrape time."""

    def __init__(self, census: VersionCensus) -> None:
        self.census = census

    def collect(self) -> Iterator[GaugeMetricFamily]:
        versions = GaugeMetricFamily("miosa_versions", "DeploymentVersions by state and kind.", labels=["state", "kind"])
        counts = self.census.counts()
        for state in STATES:
            for kind in KINDS:
                versions.add_metric([state, kind], counts.get((state, kind), 0))
        yield versions
        oldest = GaugeMetricFamily(
            "miosa_versions_oldest_seconds",
            "Seconds the version longest in a waiting state (created, building) has been in it.",
            labels=["state"],
        )
        for state in WAITING_STATES:
            oldest.add_metric([state], self.census.oldest_seconds(state))
        yield oldest


def serve(address: str, port: int, census: VersionCensus, registry: CollectorRegistry = REGISTRY) -> Any:
    """Start the ``/metrics`` endpoint in a daemon thread; returns the server (``shutdown()``)."""
    collector = CensusCollector(census)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError:
        registry.unregister(collector)
        raise
    server.census_collector = collector  # type: ignore[attr-defined]
    log.info("metrics at http://%s:%d/metrics", address, port)
    return server


def stop(server: Any, registry: CollectorRegistry = REGISTRY) -> None:
    server.shutdown()
    server.server_close()
    registry.unregister(server.census_collector)


# ---------------------------------------------------------------------------- recording


def ingestion(outcome: str, reason: str, seconds: float, release_bytes: int | None = None) -> None:
    INGESTIONS.labels(outcome, reason).inc()
    INGESTION_SECONDS.labels(outcome).observe(seconds)
    if release_bytes is not None:
        INGESTION_BYTES.observe(release_bytes)


def health_gate(outcome: str, reason: str, seconds: float | None) -> None:
    HEALTH_GATES.labels(outcome, reason).inc()
    if seconds is not None:
        HEALTH_GATE_SECONDS.labels(outcome).observe(seconds)


def rollout_ended(action: str, outcome: str, duration_action: str, seconds: float | None) -> None:
    ROLLOUTS.labels(action, outcome).inc()
    if seconds is not None:
        ROLLOUT_SECONDS.labels(duration_action).observe(max(0.0, seconds))


def collector_run(ok: bool, finished_at: float) -> None:
    COLLECTOR_RUNS.labels("success" if ok else "failure").inc()
    if ok:
        COLLECTOR_LAST_SUCCESS.set(finished_at)


def collected(versions: int = 0, freed_bytes: int = 0) -> None:
    if versions:
        COLLECTED_VERSIONS.inc(versions)
    if freed_bytes:
        COLLECTED_BYTES.inc(freed_bytes)


def handler_retry(handler: str, reason: str) -> None:
    HANDLER_RETRIES.labels(handler, reason).inc()


def webhook_decision(webhook: str, decision: str) -> None:
    WEBHOOK_DECISIONS.labels(webhook, decision).inc()
