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
import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from . import __version__, lifecycle
from .api import meta
from .controllers.common import Retry
from .controllers.deployments import DeploymentController
from .controllers.offboarding import PeriodicOffboarding, TenantOffboarding
from .controllers.retention import Collector, PeriodicCollector
from .controllers.versions import QueuedForSlot, VersionController
from .coordination import Coordination
from .kube.client import ApiError, ClusterApi, Conflict, Kube, KubeApi, TransientApiError
from .kube.tokenreview import TokenReviewer, api_review
from .observability import context, instrument, metrics
from .observability.census import VersionCensus
from .observability.journal import Journal, JournaledKube
from .render.live import StaticServer
from .serve.artifacts import ArtifactEndpoint, EndpointLimits
from .settings import Settings
from .sharding import Shard
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
    logging.getLogger("kopf.objects").addFilter(QuietForgetting())
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
    configure_watching(settings, config)
    # Controllers write through the journal: their status writes become log lines and metrics.
    kube = JournaledKube(Kube.from_environment(config.kube_timeouts), Journal(CENSUS))
    # managedFields name the writer: "miosa-operator", or "miosa-operator-shard-<i>" per shard.
    kube.api_client.user_agent = f"{field_manager(config.shard)}/{__version__}"
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
    memo.retention = Collector.from_config(kube, config)  # also marks RetentionPolicies accepted
    memo.retention.store = instrument.FreedBytes(memo.retention.store)
    memo.singletons = SingletonWork(config, memo.retention, memo.offboarding, kube)
    configure_webhook(settings, memo, config, kube)
    if config.metrics_port:
        try:
            memo.metrics_server = metrics.serve(config.metrics_addr, config.metrics_port, CENSUS)
        except OSError as exc:  # e.g. another operator (make dev?) holds the port: say so and stop
            raise kopf.PermanentError(
                f"cannot serve metrics on {config.metrics_addr}:{config.metrics_port} (MIOSA_METRICS_PORT): {exc}"
            ) from exc
    if config.shard.sharded:
        memo.coordination = join_shards(kube, config, memo.singletons)
    else:
        memo.singletons.start()
    threading.Thread(target=seed_census, args=(kube, config), name="miosa-census-seed", daemon=True).start()
    log.info("miosa-operator configured: releases at %s, %s", config.releases_uri, config.shard)


@kopf.on.cleanup()
def stop_background_work(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "coordination", None):
        memo.coordination.stop()  # stops the singletons if this shard held them
    elif getattr(memo, "singletons", None):
        memo.singletons.stop()
    if getattr(memo, "artifacts", None):
        memo.artifacts.stop()
    if getattr(memo, "admission", None):
        memo.admission.close()
    if getattr(memo, "metrics_server", None):
        metrics.stop(memo.metrics_server)


@kopf.on.cleanup()
def release_build_attempts(memo: kopf.Memo, **_: Any) -> None:
    """A graceful stop: attempts still held (health gates) must not count as interrupted, and
    number claims due for release (``claim_releases``) are released now."""
    released = memo.versions.release_attempts()
    claims = memo.versions.claim_releases.stop()
    log.info("graceful stop: released %d build attempts and %d number claims", released, claims)


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
        memo.singletons.ca_file = Path(server.cafile)  # one owner of the caBundle (SingletonWork)


QUEUE_RECHECK = 30.0
"""Seconds a version queued for an ingestion slot waits to be woken before it asks again."""


@kopf.on.resume(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
@kopf.on.create(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
async def version_lifecycle(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """created → building → ready | failed, one idempotent step after another.

    The reconcile runs on kopf's thread pool. A version queued for an ingestion slot waits
    here, as a coroutine, until the slots wake it (``IngestionSlots.subscribe``): no thread,
    no polling, no kopf retry per second for every queued version of a flood."""
    if not owned(body):
        return
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
async def count_version(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the census (versions by state and kind, for /metrics and log lines) current, and
    forget a version that is gone or settled (``forget_gone``).

    Async: it runs on the event loop, no worker thread per event (10,000 at startup).  One
    handler for both: kopf's per-handler work on every event of every version costs more than
    either."""
    CENSUS.observe(type, body)
    if type == "DELETED":
        _forget(_uid(body))
        if getattr(memo, "versions", None):
            memo.versions.forget(_uid(body))


@kopf.on.resume(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL)
@kopf.on.create(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL)
@kopf.on.update(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL)
def deployment_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Roll the live workload to the version the promotion policy asks for."""
    if owned(body):
        _run(memo.deployments.reconcile, body, retry, "deployments")


@kopf.on.event(meta.GROUP, meta.VERSION, meta.RETENTION_PLURAL)
def retention_policy_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new or changed RetentionPolicy is Ready at once (kstatus); sweeps write the rest.
    An event handler keeps no state on the object, and writing only on a new generation
    makes the status write's own event a no-op."""
    if type == "DELETED" or not getattr(memo, "retention", None) or not owned(body):
        return  # every shard sees every policy; the one owning its uid writes
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
        CENSUS.forget_namespace(event["object"]["metadata"]["name"])
        if owned(event["object"]):  # every shard sees namespaces; one offboards each
            memo.offboarding.collect(event["object"]["metadata"]["name"])


# Read once, when the handlers are registered: whether admission handlers exist depends on it.
SETTINGS = Settings.load()
# Every DeploymentVersion the watch has seen (observability.census): metrics and log lines.
CENSUS = VersionCensus(owns=SETTINGS.shard.owns)
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


# ---------------------------------------------------------------------- shards and singletons


def field_manager(shard: Shard) -> str:
    """Our name in managedFields (the API server takes it from the User-Agent)."""
    return f"miosa-operator-shard-{shard.index}" if shard.sharded else "miosa-operator"


def owned(body: Any) -> bool:
    """This shard's object?  The API server filters by the same hash (``sharding``); this is
    the last check, for Namespace events (not sharded by kopf) and should a server ignore it."""
    return SETTINGS.shard.owns(((body.get("metadata") or {}).get("uid")) or "")


class SingletonWork:
    """What must run in one process only: the periodic collector and offboarding sweeps, and
    keeping the webhook configuration's caBundle.  Every shard builds it; the holder of the
    singletons' Lease starts it (``coordination``), an unsharded operator starts it at once."""

    def __init__(self, config: Settings, retention: Collector, offboarding: TenantOffboarding, kube: ClusterApi) -> None:
        self.config, self.offboarding, self.kube = config, offboarding, kube
        self.sweeps = instrument.CountedSweeps(retention)
        self.ca_file: Path | None = None
        self.running: list[Any] = []

    def start(self) -> None:
        if self.ca_file is not None and self.config.webhook_configuration:
            try:
                ensure_ca_bundle(self.kube, self.config.webhook_configuration, self.ca_file.read_bytes())
            except ApiError as exc:  # promotions are refused meanwhile (failurePolicy Fail); say why
                log.error("admission: cannot update the caBundle of %s: %s", self.config.webhook_configuration, exc)
        if self.config.gc_interval > 0:
            # A short interval (tests, small installations) also means a short first wait.
            first = min(60.0, self.config.gc_interval)
            periodic = PeriodicCollector(self.sweeps, self.config.gc_interval, first_delay=first)
            self.running = [periodic, PeriodicOffboarding(self.offboarding, self.config.gc_interval)]
            for work in self.running:
                work.start()

    def stop(self) -> None:
        for work in self.running:
            work.stop()
        self.running = []


def join_shards(kube: ClusterApi, config: Settings, singletons: SingletonWork) -> Coordination:
    """Hold this shard's Lease before any watch starts (kopf runs startup handlers first)."""
    check_sharded_watches(kube, config)
    identity = f"{socket.gethostname()}-{os.getpid()}"
    coordination = Coordination(
        kube.api_client,
        config.shard,
        config.leases_namespace,
        identity,
        singletons,
        on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM),
        duration=config.lease_seconds,
    )
    coordination.join()
    coordination.start()
    return coordination


def check_sharded_watches(kube: ClusterApi, config: Settings) -> None:
    """Refuse to run as a shard where the API server would send every shard everything.

    A server that applies shard selectors validates them (an unsupported field path is an
    error); one without the feature gate ignores the parameter and lists everything (200)."""
    path = f"/apis/{meta.GROUP}/{meta.VERSION}/{meta.VERSION_PLURAL}"
    probe = "shardRange(object.metadata.name, '0x0000000000000000', '0x0000000000000001')"
    try:
        kube.api_client.call_api(
            path,
            "GET",
            query_params=[("limit", "1"), ("shardSelector", probe)],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=kube.timeouts.request_timeout,
        )
    except ApiException as exc:
        if "invalid shard selector" in str(exc.body):  # 400, or 500 from Kubernetes 1.37's alpha
            return
        raise kopf.PermanentError(f"{config.shard}: cannot check that the API server shards lists: {exc}") from exc
    raise kopf.PermanentError(
        f"{config.shard}: the API server ignores shard selectors (feature gate ShardedListAndWatch, "
        "Kubernetes 1.36+); every shard would handle every version. Enable the gate or set MIOSA_SHARDS=1."
    )


# ---------------------------------------------------------------------- what kopf watches and keeps

SETTLED_STATES = ("ready", "failed", "archived")
# Settled versions need no handler: the Deployment controller, promotion and retention find
# them by LIST.  Watching only the others keeps kopf's per-object memory to versions in flight.
UNSETTLED_VERSIONS = ",".join(f"status.state!={state}" for state in SETTLED_STATES)


def seed_census(kube: ClusterApi, config: Settings) -> None:
    """Count this shard's settled versions, which the watch never shows (observability.census)."""
    shard = config.shard.selector if config.shard.sharded else ""
    try:
        listings = (
            kube.list_pages(meta.VERSION_PLURAL, field_selector=f"status.state={state}", shard_selector=shard)
            for state in SETTLED_STATES
        )
        seen = CENSUS.seed(itertools.chain.from_iterable(listings))  # one call: it compacts at the end
        log.info("census: %d settled versions counted", seen)
    except ApiError as exc:
        log.warning("census: settled versions not counted (%s); versions in flight still are", exc)


def configure_watching(settings: kopf.OperatorSettings, config: Settings) -> None:
    """Server-side selectors, and kopf's bookkeeping in this process instead of on objects.

    A version leaving the selection (it became ready or failed) arrives as a DELETED event:
    kopf forgets the object and runs no deletion logic (there is none, and no finalizer), and
    ``forget_version`` drops what is kept here.  Shards get their share from the API server.
    """
    settings.watching.field_selectors[meta.GROUP, meta.VERSION_PLURAL] = UNSETTLED_VERSIONS
    settings.persistence.progress_storage = PROGRESS
    settings.persistence.diffbase_storage = ESSENCES
    if config.shard.sharded:
        for plural in (meta.VERSION_PLURAL, meta.DEPLOYMENT_PLURAL):
            settings.watching.shard_selectors[meta.GROUP, plural] = config.shard.selector


def _uid(body: Any) -> str:
    return str(((body.get("metadata") or {}).get("uid")) or "")


class ProgressInMemory(kopf.ProgressStorage):
    """kopf's handler progress (retries, delays) in this process, not in an annotation.

    The annotation cost a PATCH (and a watch event back) per success and two per retry.  A
    restart forgets the progress; every handler here is idempotent and simply runs again, as
    ``on.resume`` did.  Waking up after a delay needs an event, so ``touch`` still writes kopf's
    dummy annotation: one PATCH per retry.
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, dict[str, kopf.ProgressRecord]] = {}
        self._toucher = kopf.AnnotationsProgressStorage()

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        return self._records.get(_uid(body), {}).get(key)

    def store(self, *, key: kopf.HandlerId, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.setdefault(_uid(body), {})[key] = kopf.ProgressRecord(**record)

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        records = self._records.get(_uid(body), {})
        records.pop(key, None)
        if not records:
            self._records.pop(_uid(body), None)

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        self._toucher.touch(body=body, patch=patch, value=value)

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        # kopf deep-copies every essence (twice per event) to drop its own annotations; most
        # have none (only a retry's wake-up writes one), and nothing changes an essence later.
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        if not any(key.startswith(f"{self._toucher.prefix}/") for key in annotations):
            return essence
        return self._toucher.clear(essence=essence)

    def forget(self, uid: str) -> None:
        self._records.pop(uid, None)

    def __len__(self) -> int:
        return len(self._records)


class EssencesInMemory(kopf.DiffBaseStorage):
    """The last handled essence of each object, in this process, not in an annotation.

    A DeploymentVersion's spec is immutable and its handler level-based, so its essence is a
    constant: the first event after a start runs the handler (what resume did), every later
    one (the echoes of the handler's own writes) is a no-op, and kopf neither deep-copies the
    event's body nor writes an annotation (two PATCHes per version before).  Deployments keep
    kopf's essence (spec, labels, annotations) for ``on.update``, kept here.
    """

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("kind") == meta.VERSION_KIND:
            return kopf.BodyEssence()
        if extra_fields:  # a handler watching a field of status: kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        # kopf deep-copies the whole body, status and managedFields included, then drops them:
        # most of the operator's CPU per Deployment event (every claim and release of a number
        # is one).  Only what the essence keeps is handed to it; the essence is the same.
        metadata = body.get("metadata") or {}
        slim = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        slim["metadata"] = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)), extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(_uid(body))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[_uid(body)] = essence

    def forget(self, uid: str) -> None:
        self._essences.pop(uid, None)

    def __len__(self) -> int:
        return len(self._essences)


PROGRESS = ProgressInMemory()
ESSENCES = EssencesInMemory()


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(meta.GROUP, meta.VERSION, meta.DEPLOYMENT_PLURAL, when=_deleted)
async def forget_gone(body: kopf.Body, **_: Any) -> None:
    """Deleted, or (a version, through ``count_version``) settled and out of the watch:
    nothing to remember about it.

    Async: it runs on the event loop, never a worker thread per event."""
    _forget(_uid(body))


def _forget(uid: str) -> None:
    PROGRESS.forget(uid)
    ESSENCES.forget(uid)


class QuietForgetting(logging.Filter):
    """kopf logs each event handler's success; forgetting a settled version is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() == f"Handler '{forget_gone.__name__}' succeeded.")  # type: ignore[attr-defined]  # kopf returns the function
