"""kopf handlers: thin adapters from kopf's causes to the controllers.

Handlers hold no decisions.  They build the controllers once at startup (into kopf's
``memo``), hand them the raw body, and translate the controllers' ``Retry`` and transient
API errors into ``kopf.TemporaryError`` so kopf re-runs them with backoff.  Resource handlers
are sync functions: kopf runs them in its thread pool, and the Kubernetes and boto3 clients
are blocking anyway.  The admission handler is the exception: it is async and does its
lookup on a pool of its own (``webhook.PromotionReviewer``), so a promotion is never queued
behind ingestions in kopf's pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf

from . import lifecycle
from .api import meta
from .controllers.common import Retry
from .controllers.deployments import DeploymentController
from .controllers.offboarding import PeriodicOffboarding, TenantOffboarding
from .controllers.retention import Collector, PeriodicCollector
from .controllers.versions import QueuedForSlot, VersionController
from .kube.client import ApiError, ClusterApi, Conflict, Kube, KubeApi, TransientApiError
from .kube.tokenreview import TokenReviewer, api_review
from .observability import context, instrument, metrics
from .observability.census import VersionCensus
from .observability.journal import Journal, JournaledKube
from .render.live import StaticServer
from .serve.artifacts import ArtifactEndpoint, EndpointLimits
from .settings import Settings
from .store.router import StoreRouter
from .webhook import PROMOTION_WEBHOOK, PromotionReviewer, admission_server, ensure_ca_bundle

log = logging.getLogger(__name__)


class KopfEvents:
    """Kubernetes events through kopf's event poster (batched, non-blocking)."""

    def normal(self, body: dict[str, Any], reason: str, message: str) -> None:
        kopf.event(body, type="Normal", reason=reason, message=message)  # type: ignore[arg-type]  # any mapping with metadata

    def warning(self, body: dict[str, Any], reason: str, message: str) -> None:
        kopf.event(body, type="Warning", reason=reason, message=message)  # type: ignore[arg-type]  # any mapping with metadata


WAITING = "waiting: "


class PlannedWaitsAreInfo(logging.Filter):
    """kopf logs every TemporaryError as an error and posts it as an event; a planned wait
    (a missing Deployment, a running health gate) is neither, so it is lowered to INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and WAITING in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class QuietCensus(logging.Filter):
    """kopf logs every event handler's success; the census sees every watch event of every
    version (10,000 at startup), which would drown the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage() == f"Handler '{count_version.__name__}' succeeded.")  # type: ignore[attr-defined]  # kopf returns the function


def backoff(retry: int) -> float:
    return float(min(2 ** min(retry, 6), 60))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = SETTINGS
    logging.getLogger("kopf.objects").addFilter(PlannedWaitsAreInfo())
    logging.getLogger("kopf.objects").addFilter(QuietCensus())
    settings.execution.max_workers = 16
    settings.posting.level = logging.WARNING  # our own events say what happened
    settings.persistence.finalizer = f"{meta.GROUP}/finalizer"
    settings.watching.server_timeout = 270
    # Every request of kopf's own client is bounded too: a half-open watch connection ends
    # (and is re-opened) instead of silently starving a resource of events.
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.watching.connect_timeout = config.kube_connect_timeout
    settings.networking.connect_timeout = config.kube_connect_timeout
    # List existing objects in pages: with 10,000 versions one unpaged LIST is ~35 MB of JSON
    # parsed at once (benchmarks/: restart RSS 316 -> 263 MiB, peak 411 -> 272 MiB).
    settings.watching.chunk_size = 500
    settings.networking.request_timeout = 60
    # Controllers write through the journal: their status writes become log lines and metrics.
    kube = JournaledKube(Kube.from_environment(config.kube_timeouts), Journal(CENSUS))
    memo.config = config
    memo.kube = kube
    memo.executor = settings.execution.executor
    events = KopfEvents()
    store = StoreRouter.from_settings(config)
    # Ingestions run in limited worker processes, a bounded number at once (controllers.ingestion_slots).
    memo.versions = VersionController(kube, store, config, events, stopping=lifecycle.STOPPING)
    memo.versions.static_build = instrument.TimedStaticBuild(memo.versions.static_build)
    memo.deployments = DeploymentController(kube, config, events, static_server(config))
    memo.artifacts = artifact_endpoint(config, kube)
    memo.offboarding = TenantOffboarding(kube, store, config.releases_uri)
    configure_webhook(settings, memo, config, kube)
    if config.metrics_port:
        try:
            memo.metrics_server = metrics.serve(config.metrics_addr, config.metrics_port, CENSUS)
        except OSError as exc:  # e.g. another operator (make dev?) holds the port: say so and stop
            raise kopf.PermanentError(
                f"cannot serve metrics on {config.metrics_addr}:{config.metrics_port} (MIOSA_METRICS_PORT): {exc}"
            ) from exc
    memo.retention = Collector.from_config(kube, config)  # also marks RetentionPolicies accepted
    memo.retention.store = instrument.FreedBytes(memo.retention.store)
    if config.gc_interval > 0:
        # A short interval (tests, small installations) also means a short first wait.
        first = min(60.0, config.gc_interval)
        memo.collector = PeriodicCollector(instrument.CountedSweeps(memo.retention), config.gc_interval, first_delay=first)
        memo.collector.start()
        memo.periodic_offboarding = PeriodicOffboarding(memo.offboarding, config.gc_interval)
        memo.periodic_offboarding.start()
    log.info("miosa-operator configured: releases at %s", config.releases_uri)


@kopf.on.cleanup()
def stop_background_work(memo: kopf.Memo, **_: Any) -> None:
    for name in ("collector", "periodic_offboarding", "artifacts"):
        if getattr(memo, name, None):
            getattr(memo, name).stop()
    if getattr(memo, "admission", None):
        memo.admission.close()
    if getattr(memo, "metrics_server", None):
        metrics.stop(memo.metrics_server)


@kopf.on.cleanup()
def release_build_attempts(memo: kopf.Memo, **_: Any) -> None:
    """A graceful stop: attempts still held (health gates) must not count as interrupted."""
    released = memo.versions.release_attempts()
    log.info("graceful stop: released %d build attempts", released)


def static_server(config: Settings) -> StaticServer:
    """Static pods download from the artifact endpoint and check with the operator's limits."""
    limits = tuple(sorted(config.limits_environment().items()))
    return StaticServer(config.static_server_image, config.artifacts_pod_url, config.artifacts_audience, limits)


def artifact_endpoint(config: Settings, kube: ClusterApi) -> ArtifactEndpoint:
    """The endpoint static pods download releases from, on its own thread and event loop."""
    reviewer = TokenReviewer(api_review(kube.api_client), config.artifacts_audience)
    limits = EndpointLimits(
        max_streams=config.artifacts_max_streams, max_streams_per_tenant=config.artifacts_max_streams_per_tenant
    )
    endpoint = ArtifactEndpoint(
        StoreRouter.from_settings(config),
        config.releases_uri,
        reviewer,
        host=config.artifacts_addr,
        port=config.artifacts_port,
        limits=limits,
    )
    endpoint.start()
    return endpoint


def configure_webhook(settings: kopf.OperatorSettings, memo: kopf.Memo, config: Settings, kube: ClusterApi) -> None:
    if not config.webhook_enabled:
        log.warning("admission webhook disabled (MIOSA_WEBHOOK=off): promotions are only checked by the controller")
        return
    server = admission_server(config)
    settings.admission.server = server
    # The configurations are installed by the chart (or hack/local-admission.sh), never by kopf.
    settings.admission.managed = None
    # Its own client: its own connection pool and short timeouts, nothing shared with ingestion.
    reviewer_kube = Kube.from_environment(config.admission_timeouts, pool_size=config.admission_workers)
    memo.admission = PromotionReviewer(reviewer_kube, config.admission_workers)
    if config.webhook_configuration and server.cafile:
        try:
            ensure_ca_bundle(kube, config.webhook_configuration, Path(server.cafile).read_bytes())
        except ApiError as exc:  # promotions are refused meanwhile (failurePolicy Fail); say why
            log.error("admission: cannot update the caBundle of %s: %s", config.webhook_configuration, exc)


QUEUE_RECHECK = 30.0
"""Seconds a version queued for an ingestion slot waits to be woken before it asks again."""


@kopf.on.resume(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
@kopf.on.create(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
async def version_lifecycle(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """created → building → ready | failed, one idempotent step after another.

    The reconcile runs on kopf's thread pool. A version queued for an ingestion slot waits
    here, as a coroutine, until the slots wake it (``IngestionSlots.subscribe``): no thread,
    no polling, no kopf retry per second for every queued version of a flood."""
    current: dict[str, Any] | None = dict(body)
    while current is not None:
        try:
            await _in_thread(memo, _run, memo.versions.reconcile, current, retry, "versions")
            return
        except QueuedForSlot as queued:
            await _wait_for_turn(memo.versions.slots, queued.key)
        current = await _in_thread(memo, _fresh, memo.kube, current)


async def _in_thread(memo: kopf.Memo, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn`` on kopf's thread pool, in this handler's context (kopf.event needs it), as
    kopf runs sync handlers."""
    copied = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(memo.executor, functools.partial(copied.run, fn, *args))


def _fresh(kube: KubeApi, body: dict[str, Any]) -> dict[str, Any] | None:
    """The object as it is now (the handler's body is a snapshot); None once deleted."""
    try:
        return kube.get(meta.VERSION_PLURAL, body["metadata"]["namespace"], body["metadata"]["name"])
    except ApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=5) from exc


async def _wait_for_turn(slots: Any, key: str) -> None:
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    if slots.subscribe(key, lambda: loop.call_soon_threadsafe(woken.set)):
        return
    try:
        await asyncio.wait_for(woken.wait(), QUEUE_RECHECK)
    except TimeoutError:
        pass
    finally:
        slots.unsubscribe(key)


@kopf.on.event(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
async def count_version(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Keep the census (versions by state and kind, for /metrics and log lines) current.

    Async: it runs on the event loop, no worker thread per event (10,000 at startup)."""
    CENSUS.observe(type, body)


@kopf.on.resume(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL)
@kopf.on.create(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL)
@kopf.on.update(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL)
def deployment_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Roll the live workload to the version the promotion policy asks for."""
    _run(memo.deployments.reconcile, body, retry, "deployments")


@kopf.on.event(meta.GROUP, meta.VERSION, meta.RETENTION_PLURAL)
def retention_policy_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new or changed RetentionPolicy is Ready at once (kstatus); sweeps write the rest.
    An event handler keeps no state on the object, and writing only on a new generation
    makes the status write's own event a no-op."""
    if type == "DELETED" or not getattr(memo, "retention", None):
        return
    try:
        memo.retention.accept(dict(body))
    except ApiError as exc:
        log.warning(
            "could not mark RetentionPolicy %s/%s accepted: %s",
            body.get("metadata", {}).get("namespace"),
            body.get("metadata", {}).get("name"),
            exc,
        )


async def validate_promotion(body: kopf.Body, old: kopf.Body | None, memo: kopf.Memo, warnings: list[str], **_: Any) -> None:
    """Refuse a promotedVersion that can never go live; admit one that may, with a warning."""
    verdict = await memo.admission.review(dict(body), dict(old) if old else None)
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=422)


def register_webhooks() -> None:
    """Admission handlers exist only with a webhook server: kopf refuses to start otherwise."""
    kopf.on.validate(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL, id=PROMOTION_WEBHOOK, operations=["CREATE", "UPDATE"])(
        instrument.admission_decisions("promotion", validate_promotion)
    )


@kopf.on.event("", "v1", "namespaces")
def namespace_deleted(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A tenant's namespace is gone: its releases go too (controllers.offboarding)."""
    if event.get("type") == "DELETED":
        memo.offboarding.collect(event["object"]["metadata"]["name"])


# Read once, when the handlers are registered: whether admission handlers exist depends on it.
SETTINGS = Settings.load()
# Every DeploymentVersion the watch has seen (observability.census): metrics and log lines.
CENSUS = VersionCensus()
if SETTINGS.webhook_enabled:
    register_webhooks()


FIRST_POLL = 0.1


def planned_delay(delay: float, retry: int) -> float:
    """A planned wait is checked again after 0.1 s, 0.2 s, 0.4 s, … up to its own delay.

    Rollouts and health gates on a responsive cluster finish in well under a second; waiting
    the full poll interval (2 s) before the first look made every promote → live take ≥ 2 s
    (benchmarks/: 2.07 s against 0.11 s for the apps/v1 rollout itself; now 0.4-0.6 s).
    """
    return min(delay, FIRST_POLL * 2 ** min(retry, 16))


def _run(step: Callable[[dict[str, Any]], Any], body: kopf.Body | dict[str, Any], retry: int, handler: str) -> None:
    """Run a controller step on ``body``; everything it logs and writes is about ``body``."""
    with context.reconciling(dict(body)):
        try:
            step(dict(body))
        except QueuedForSlot:
            raise  # the async version handler waits for its turn
        except Retry as wait:
            metrics.handler_retry(handler, "wait" if wait.planned else "transient")
            prefix = WAITING if wait.planned else ""
            # Unplanned retries (store faults, a crashed worker) back off: at least the delay asked for.
            delay = planned_delay(wait.delay, retry) if wait.planned else max(wait.delay, backoff(retry))
            raise kopf.TemporaryError(f"{prefix}{wait}", delay=delay) from None
        except (TransientApiError, Conflict) as exc:
            metrics.handler_retry(handler, "api_conflict" if isinstance(exc, Conflict) else "api_unavailable")
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=backoff(retry)) from exc
        except ApiError as exc:
            # A 4xx we did not expect (e.g. RBAC): keep retrying slowly and say so loudly.
            metrics.handler_retry(handler, "api_refused")
            raise kopf.TemporaryError(f"Kubernetes API refused a request: {exc}", delay=30) from exc
