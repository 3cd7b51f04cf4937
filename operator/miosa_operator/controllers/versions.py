"""Bring a DeploymentVersion from ``created`` to ``ready`` or ``failed``.

``reconcile`` is level-based and idempotent: it reads the object and does the next missing
step (identity → number → building → ingest or health gate → ready/failed), writing status
after each step.  Running it twice, or after the operator was killed half-way, continues
where the last run stopped; that is what makes the kopf handler around it safe to retry.

Waiting (for the Deployment to appear, for an ingestion slot, for the verification
workload) and transient errors (API 5xx/timeouts/conflicts, store faults) raise ``Retry``; the
handler turns it into a kopf retry with backoff.  Only a decision about the version itself
ends in ``failed``; a store fault is shown on the version's conditions while it is retried
(``StoreUnavailable``: Reconciling; ``StoreAccessDenied``: Stalled) and the same version goes
on once it is fixed.

One status write per state change: what is decided without being a state of its own (the
identity of a new version, its number once claimed) is *drafted* (``_draft``) and written
with the next status write of the same reconcile (the number claim, ``building``, queued, a
failure), or alone before the reconcile returns or retries, never later.  The labels are
written (once, number included) right after the write that records the number, and the
claim on the Deployment is released then, or batched with a later claim
(``claim_releases``).  A version's Deployment is read once per reconcile; the counter's
compare-and-swap catches a stale read.

Overlap on the path to ``ready``: the reads a reconcile needs after the Deployment's (the
unnumbered versions, the bundle's HEAD) are started with it, and a new static version's
bundle is verified while its number is claimed (``_verify_ahead``): it only reads and checks
into a temporary file; the attempt is recorded (``building``) and the release stored after
the number, as before.  A reconcile that stops before then abandons it (the slot is given
back when it ends; nothing was stored).

Build scheduling (static versions): the source is confined to the tenant before anything is
read (``SourceNotAllowed``), then the version waits in ``created`` for an ingestion slot
(``ingestion_slots``: bounded, fair per tenant) and moves to ``building`` when it gets one.

Crash loops end by themselves (``attempts``): the status write that starts an ingestion or
health gate (the one that sets ``building``, for the first) records the operator run holding
it in ``status.buildAttempts.running``; every way an attempt ends in this process clears it,
and so does a graceful stop (``release_attempts``). Finding it held by another run therefore
means that run died abnormally during the attempt; after ``MIOSA_MAX_INTERRUPTED_ATTEMPTS``
such deaths the version fails with ``IngestionAborted`` instead of taking the operator down
again.  A verification ahead (above) runs for the length of the number claim's writes before
its attempt is recorded; a death in that window is not counted.  That leaves the guard intact:
the bundle is read in a limited worker process (``ingest.isolation``), so it cannot end the
operator there, and the window is a few round trips long.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from ..api import meta
from ..api.conditions import Reason
from ..api.models import BuildAttempts, DeploymentVersion, VersionKind, VersionState
from ..domain import states
from ..domain.conditions import READY, Health, get_condition, health_conditions
from ..domain.ids import new_deployment_id, new_version_id, ulid
from ..domain.labels import version_labels
from ..domain.numbering import Counter, claim_number, counter_from_status, seed
from ..ingest.isolation import IngestionInterrupted, IngestionTimedOut, WorkerCrashed, ingest_isolated
from ..kube.client import ApiError, Conflict, KubeApi, TransientApiError
from ..settings import Settings
from ..store.base import ArtifactStore, ObjectInfo
from ..store.sources import SourceNotAllowed
from .claim_releases import ClaimReleases
from .common import Clock, EventSink, Failure, Obj, Retry, iso, object_ref, parse_time, utcnow
from .gate_log import GateTranscript
from .health_gate import HealthGate
from .ingestion_slots import IngestionSlots, Queued, Slot
from .static_build import Built, Ingest, Prepared, Refused, Rejected, StaticBuild, StoreWait, Verified

log = logging.getLogger(__name__)

NUMBER_CLAIM_ATTEMPTS = 50
WAKE_ATTEMPTS = 5
QUEUE_POLL = 2.0
FULL_QUEUE_POLL = 10.0
PREPARED_TTL = 300.0


class QueuedForSlot(Retry):
    """Waiting for an ingestion slot: the handler may wait for ``slots.subscribe`` instead of polling."""

    def __init__(self, message: str, key: str, delay: float) -> None:
        super().__init__(message, delay=delay)
        self.key = key


def new_run_id() -> str:
    """Identifies one operator process in ``status.buildAttempts.running``."""
    return f"run_{ulid()}"


def seed_counter(kube: KubeApi, namespace: str, deployment: str, uid: str) -> int:
    """Where incarnation ``uid`` of Deployment ``deployment`` starts numbering (``domain.numbering``):
    above every number of the versions of that name, and every number being claimed from an
    earlier incarnation (claims from this one are its own business)."""
    selector = f"spec.deploymentRef.name={deployment}"
    statuses = [v.get("status") or {} for v in kube.list(meta.VERSION_PLURAL, namespace, field_selector=selector)]
    claims = [s.get("numberClaim") or {} for s in statuses]
    return seed(
        [*(s.get("versionNumber") for s in statuses), *(c.get("number") for c in claims if c.get("deploymentUid") != uid)]
    )


class VersionController:
    def __init__(
        self,
        kube: KubeApi,
        store: ArtifactStore,
        config: Settings,
        events: EventSink,
        clock: Clock = utcnow,
        *,
        ingest: Ingest = ingest_isolated,
        slots: IngestionSlots | None = None,
        run_id: str | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.kube, self.store, self.config, self.events, self.clock = kube, store, config, events, clock
        self.static_build = StaticBuild(store, config, clock, ingest)
        self.health_gate = HealthGate(kube, config, events, clock, GateTranscript(kube, store, config, clock))
        self.slots = slots or IngestionSlots(
            config.max_concurrent_ingestions,
            config.tenant_max_ingestions,
            config.tenant_max_bytes_in_flight,
            config.tenant_max_pending,
            first_niceness=config.ingest_niceness,
        )
        self.run_id = run_id or new_run_id()
        self.claim_releases = ClaimReleases(kube, config.claim_release_delay)
        self.stopping = stopping or threading.Event()
        self._held: set[tuple[str, str]] = set()
        self._held_lock = threading.Lock()
        self._prepared: dict[str, tuple[Prepared, float]] = {}
        self._drafts: dict[str, _Draft] = {}
        self._numbers_sent: set[str] = set()
        """Versions (uids) this process sent a status write with a number, whatever came of it."""
        # What follows a status write (a claim's release, the labels) overlaps what comes next
        # (the ingestion): two round trips off the path to ready. Settled before the next write.
        self._after_writes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="miosa-after-write")
        self._following: dict[str, Future[None]] = {}
        # Reads whose answers come later in the reconcile (the versions numbered before this
        # one, the bundle's size) are started with the first read: their round trips overlap.
        self._reads_ahead = ThreadPoolExecutor(max_workers=8, thread_name_prefix="miosa-read-ahead")
        self._ahead: dict[str, _ReadsAhead] = {}
        # A new version's bundle is verified while its number is claimed (``_verify_ahead``);
        # each holds an ingestion slot, so the slots bound these threads' work.
        self._verifying = ThreadPoolExecutor(
            max_workers=max(1, config.max_concurrent_ingestions), thread_name_prefix="miosa-verify-ahead"
        )
        self._abandoned: dict[str, _Verification] = {}
        """Verifications whose reconcile stopped before the number: the next one adopts them."""
        self._unwritten_ids: dict[str, str] = {}
        """Ids drafted for versions whose identity write failed: the next reconcile keeps the
        same one, so a verification started under it (its build log names it) is adopted."""

    # ------------------------------------------------------------------ entry point
    def reconcile(self, body: Obj) -> VersionState:
        version = DeploymentVersion.model_validate(body)
        if version.status.state in (VersionState.READY, VersionState.ARCHIVED, VersionState.FAILED):
            self._ensure_labels(version)
            return version.status.state
        try:
            state = self._reconcile(version)
        except Exception:
            try:
                self._flush(version)
                self._settle(version.metadata.uid)
            except ApiError as exc:  # the next run decides again (a claimed number stays pending until then)
                log.warning("%s/%s: status not written: %s", version.metadata.namespace, version.metadata.name, exc)
            raise
        finally:
            self._drop_reads_ahead(version.metadata.uid)
        self._flush(version)
        self._settle(version.metadata.uid)
        return state

    def _reconcile(self, version: DeploymentVersion) -> VersionState:
        version = self._ensure_identity(version)
        self._read_ahead(version)
        deployment = self.kube.get(meta.DEPLOYMENT_PLURAL, version.metadata.namespace, version.spec.deployment_ref.name)
        if deployment is None:
            self._ensure_labels(version)  # listed by its labels while it waits
            self._wait_for_deployment(version)
        assert deployment is not None
        self._verify_ahead(version, deployment)
        version = self._ensure_number(version, deployment)
        failure = self._check_kind(version, deployment) or self._check_sources(version) or self._check_interruptions(version)
        if failure is None:
            version, failure = self._build(version, deployment)
        if failure is not None:
            if version.status.state == VersionState.CREATED:  # failed is reached through building
                log_uri = version.status.build_log_uri
                version = self._set_state(version, VersionState.BUILDING, Health.reconciling(Reason.BUILDING, failure.message))
                version.status.build_log_uri = log_uri
            self._fail(version, failure)
            self._wake_deployment(version, deployment, VersionState.FAILED)
            return VersionState.FAILED
        self._wake_deployment(version, deployment, VersionState.READY)
        return VersionState.READY

    # ------------------------------------------------------------------ identity and numbering
    def _ensure_identity(self, version: DeploymentVersion) -> DeploymentVersion:
        uid = version.metadata.uid
        if version.status.id and version.status.state:
            with self._held_lock:
                self._unwritten_ids.pop(uid, None)
            return version
        with self._held_lock:
            version_id = version.status.id or self._unwritten_ids.setdefault(uid, new_version_id())
        now = self.clock()
        status: Obj = {
            "id": version_id,
            "tenantId": version.metadata.namespace,
            "state": VersionState.CREATED.value,
            "observedGeneration": version.metadata.generation,
            "conditions": self._conditions(version, Health.reconciling(Reason.PENDING, "waiting to be numbered"), now),
        }
        if version.spec.build_log is not None:
            status["externalBuildLogUri"] = version.spec.build_log.uri
        return self._draft(version, status)

    def _wait_for_deployment(self, version: DeploymentVersion) -> None:
        name = version.spec.deployment_ref.name
        ready = get_condition(version.status.conditions, READY)
        if ready is None or ready.reason != Reason.DEPLOYMENT_NOT_FOUND:
            message = f"Deployment {name!r} does not exist in namespace {version.metadata.namespace!r}; waiting for it"
            health = Health.reconciling(Reason.DEPLOYMENT_NOT_FOUND, message)
            self._patch_status(version, {"conditions": self._conditions(version, health, self.clock())})
            self.events.normal(object_ref(version), Reason.DEPLOYMENT_NOT_FOUND, message)
        raise Retry(f"waiting for Deployment {name}", delay=max(self.config.poll_interval, 1.0))

    def _ensure_number(self, version: DeploymentVersion, deployment: Obj | None = None) -> DeploymentVersion:
        ns, dep_name, uid = version.metadata.namespace, version.spec.deployment_ref.name, version.metadata.uid
        if version.status.version_number and version.status.deployment_id:
            # Numbered, but the run that wrote the number may have died (or hit a 5xx) before
            # releasing its claim: release it now, or pendingNumbers grows until the schema's
            # cap makes every later claim on this Deployment fail.
            pending = ((deployment or {}).get("status") or {}).get("pendingNumbers") or {}
            if uid in pending and not self.claim_releases.holds(ns, dep_name, uid):
                self._release_claim(ns, dep_name, uid)
            return version
        self._wait_for_earlier_versions(version, deployment)
        for attempt in range(NUMBER_CLAIM_ATTEMPTS):
            if attempt or deployment is None:  # the reconcile's read first; a conflict reads again
                deployment = self.kube.get(meta.DEPLOYMENT_PLURAL, ns, dep_name)
            if deployment is None:
                self._wait_for_deployment(version)
            assert deployment is not None
            dep_status = deployment.get("status") or {}
            rv = deployment["metadata"]["resourceVersion"]
            counter = counter_from_status(dep_status)
            patch: Obj = {}
            dep_uid = deployment["metadata"]["uid"]
            if not dep_status.get("id"):  # a new incarnation: numbering continues above its name's versions
                counter = Counter(max(counter.last, seed_counter(self.kube, ns, dep_name, dep_uid)), counter.pending)
                patch.update(id=new_deployment_id(), lastVersionNumber=counter.last, ownedObjects=[])
            claim = claim_number(counter, uid)
            if claim.needs_write and attempt == 0 and (numbered := self._numbered_meanwhile(version)) is not None:
                return numbered
            if claim.needs_write:
                mine = version.status.number_claim
                if mine is None or mine.deployment_uid != dep_uid or mine.number < claim.number:
                    claimed = {"number": claim.number, "deploymentUid": dep_uid}
                    version = self._patch_status(version, {"numberClaim": claimed})
                riding = self.claim_releases.riding(ns, dep_name, counter.pending)
                patch.update(lastVersionNumber=claim.number, pendingNumbers={**riding.patch, uid: claim.number})
            try:
                if patch:
                    deployment = self.kube.patch_status(meta.DEPLOYMENT_PLURAL, ns, dep_name, patch, resource_version=rv)
            except Conflict:
                continue  # somebody else claimed a number or set the id; read again
            if claim.needs_write:  # the read was current: what it did not show is released too
                self.claim_releases.released(ns, dep_name, riding.settled)
            # Recorded with the next status write (building, queued, failed), then released and labelled.
            number = {"versionNumber": claim.number, "deploymentId": deployment["status"]["id"], "numberClaim": None}
            return self._draft(version, number, then=self._numbered(ns, dep_name, uid))
        raise Retry("too much contention on the version counter", delay=1.0, planned=False)

    def _numbered_meanwhile(self, version: DeploymentVersion) -> DeploymentVersion | None:
        """The version as stored, if it already has its number.

        kopf may hand a reconcile a body older than this operator's own last write (an event
        still on its way): claiming again for it would take a second number, which the CRD
        refuses to record (assigned once) and which is then lost, a gap.  One GET before each
        new claim costs less than a hole in the numbering.

        Only a version this process sent a number for can be numbered behind its back: a
        number is recorded only by its claimant, which releases the claim only once the write
        succeeded, and a new process starts from kopf's consistent LIST, after every write of
        the one before.  (An interrupted claimant leaves its claim pending; claiming again
        then takes the same number, no new claim.)  Any other version is read only when its
        claim is new, which is the first reconcile of every version: no GET for those."""
        if version.metadata.uid not in self._numbers_sent:
            return None
        stored = self.kube.get(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name)
        if stored is None or not (stored.get("status") or {}).get("versionNumber"):
            return None
        with self._held_lock:
            self._drafts.pop(version.metadata.uid, None)  # decided on the stale body
        return DeploymentVersion.model_validate(stored)

    def _wait_for_earlier_versions(self, version: DeploymentVersion, deployment: Obj | None) -> None:
        """Let versions created earlier take their numbers first, so numbers follow creation
        order (creationTimestamp, then name) as users expect.  Bounded by the configured
        patience: uniqueness and gaplessness never depend on it, only the order does."""
        if not self._in_number_order_window(version):
            return
        ahead = self._ahead.get(version.metadata.uid)
        listed = ahead.unnumbered.result() if ahead and ahead.unnumbered else self._unnumbered(version)
        earlier = _earlier_unnumbered(version, deployment, listed)
        if earlier is not None:
            raise Retry(f"numbering after the earlier version {earlier}", delay=0.3)

    def _in_number_order_window(self, version: DeploymentVersion) -> bool:
        created = version.metadata.creation_timestamp
        patience = timedelta(seconds=self.config.number_order_patience)
        return not version.status.version_number and created is not None and self.clock() - created < patience

    def _unnumbered(self, version: DeploymentVersion) -> list[Obj]:
        """The Deployment's versions without a number label: a long history is not read."""
        selector = f"spec.deploymentRef.name={version.spec.deployment_ref.name}"
        unnumbered = f"!{meta.LABEL_VERSION_NUMBER}"
        return self.kube.list(meta.VERSION_PLURAL, version.metadata.namespace, label_selector=unnumbered, field_selector=selector)

    def _numbered(self, namespace: str, deployment: str, uid: str) -> Callable[[DeploymentVersion], None]:
        def release_and_label(version: DeploymentVersion) -> None:
            self.claim_releases.add(namespace, deployment, uid)  # now, or with a later claim
            self._ensure_labels(version)

        return release_and_label

    def _release_claim(self, namespace: str, deployment: str, uid: str) -> None:
        # A merge patch with null removes the key; it needs no precondition.
        self.kube.patch_status(meta.DEPLOYMENT_PLURAL, namespace, deployment, {"pendingNumbers": {uid: None}})

    def _ensure_labels(self, version: DeploymentVersion) -> None:
        wanted = version_labels(version.spec)
        if version.status.version_number:
            wanted[meta.LABEL_VERSION_NUMBER] = str(version.status.version_number)
        current = version.metadata.labels
        if all(current.get(k) == v for k, v in wanted.items()):
            return
        self.kube.patch(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, {"metadata": {"labels": wanted}})

    # ------------------------------------------------------------------ building
    def _check_kind(self, version: DeploymentVersion, deployment: Obj) -> Failure | None:
        dep_kind = (deployment.get("spec") or {}).get("kind")
        if dep_kind and dep_kind != version.spec.kind.value:
            return Failure(
                Reason.KIND_MISMATCH,
                f"version kind {version.spec.kind.value!r} does not match Deployment kind {dep_kind!r}",
            )
        return None

    def _check_sources(self, version: DeploymentVersion) -> Failure | None:
        """A tenant names only its own uploads (``store.sources``), decided before any read."""
        uris = [("spec.artifact.uri", version.spec.artifact.uri if version.spec.artifact else None)]
        uris.append(("spec.buildLog.uri", version.spec.build_log.uri if version.spec.build_log else None))
        for field, uri in uris:
            if uri is None:
                continue
            try:
                self.config.source_policy.check(uri, version.metadata.namespace)
            except SourceNotAllowed as refused:
                return Failure(Reason.SOURCE_NOT_ALLOWED, f"{field}: {refused}")
        return None

    def _build(self, version: DeploymentVersion, deployment: Obj) -> tuple[DeploymentVersion, Failure | None]:
        """Static: verify and store the release. Dynamic: the health gate. Ready on success."""
        if version.spec.kind == VersionKind.STATIC:
            return self._build_static(version)
        if not self._holds_attempt(version):
            version = self._begin_attempt(version, "verifying the runtime (health gate)")
        failure = self.health_gate.check(version, deployment)  # a Retry keeps the attempt open, held by this run
        if failure is None:
            self._become_ready(version, {})
        return version, failure

    def _build_static(self, version: DeploymentVersion) -> tuple[DeploymentVersion, Failure | None]:
        ahead = self._ahead.get(version.metadata.uid)  # an abandoned verification was adopted by ``_verify_ahead``
        if ahead is not None and ahead.verifying is not None:
            return self._conclude_ahead(version, ahead)
        looked_up = self._look_up(version)
        if isinstance(looked_up, Rejected):
            version.status.build_log_uri = looked_up.build_log_uri
            return version, looked_up.failure
        uid = version.metadata.uid
        slot = self.slots.acquire(version.metadata.namespace, uid, looked_up.size)
        if isinstance(slot, Queued):
            with self._held_lock:
                self._prepared.setdefault(uid, (looked_up, time.monotonic()))
            self._show(version, Health.reconciling(Reason.INGESTION_QUEUED, slot.message))
            if slot.ahead is None:  # not even in the queue (the namespace has too many pending)
                raise Retry(slot.message, delay=FULL_QUEUE_POLL)
            raise QueuedForSlot(slot.message, uid, delay=QUEUE_POLL)
        with self._held_lock:
            self._prepared.pop(uid, None)
        try:
            version = self._begin_attempt(version, "verifying the artifact")
            outcome = self._ingest(version, looked_up, slot.niceness)
        finally:
            self.slots.release(slot)
        if isinstance(outcome, Built):
            self._become_ready(version, outcome.fields)
            return version, None
        version.status.build_log_uri = outcome.build_log_uri
        return version, outcome.failure

    def _conclude_ahead(self, version: DeploymentVersion, ahead: _ReadsAhead) -> tuple[DeploymentVersion, Failure | None]:
        """The attempt is recorded (``building``) before anything is stored; the verification
        it covers may have started a few round trips earlier, while the number was claimed."""
        assert ahead.verifying is not None
        version = self._begin_attempt(version, "verifying the artifact")  # if it fails: abandoned (_drop_reads_ahead)
        verifying, ahead.verifying = ahead.verifying, None
        try:
            outcome = self._ingest(version, verifying.future.result, verifying.slot.niceness)
        finally:
            self.slots.release(verifying.slot)  # the verification is over: ``_ingest`` waited for it
        if isinstance(outcome, Built):
            self._become_ready(version, outcome.fields)
            return version, None
        version.status.build_log_uri = outcome.build_log_uri
        return version, outcome.failure

    def _look_up(self, version: DeploymentVersion) -> Prepared | Rejected:
        """The bundle's normalised URI and size: one HEAD per wait in the queue, not per poll."""
        now = time.monotonic()
        with self._held_lock:
            for uid in [uid for uid, (_, since) in self._prepared.items() if now - since > PREPARED_TTL]:
                del self._prepared[uid]  # versions deleted while queued, or queued for long: look again
            cached = self._prepared.get(version.metadata.uid)
        if cached is not None:
            return cached[0]
        assert version.spec.artifact is not None, "the CRD requires an artifact for static versions"
        source = self.config.source_policy.check(version.spec.artifact.uri, version.metadata.namespace)
        ahead = self._ahead.get(version.metadata.uid)
        try:
            return self.static_build.prepare(version, source, ahead.head if ahead else None)
        except StoreWait as wait:
            self._show(version, wait.health)
            raise

    # ------------------------------------------------------------------ reads ahead
    def _read_ahead(self, version: DeploymentVersion) -> None:
        """Start the reads this reconcile will need after the Deployment's: the unnumbered
        versions (numbering order) and the bundle's HEAD (its size picks the slot). Both are
        answers about the moment they were asked, as they would be a round trip later.
        Not while the version waits for its Deployment: it is polled until then.  The HEAD
        waits for the LIST when there is one (``_head_ahead``): a version that must let
        earlier ones take their numbers is polled too, and a flood of them would otherwise
        cost the store a HEAD per poll each."""
        ready = get_condition(version.status.conditions, READY)
        if ready is not None and ready.reason == Reason.DEPLOYMENT_NOT_FOUND:
            return
        reads = _ReadsAhead()
        with self._held_lock:
            self._ahead[version.metadata.uid] = reads
        if self._in_number_order_window(version):
            reads.unnumbered = self._reads_ahead.submit(self._unnumbered, version)
        else:
            self._head_ahead(version, reads)

    def _head_ahead(self, version: DeploymentVersion, reads: _ReadsAhead) -> None:
        if reads.head is not None:
            return
        source = self._bundle_source(version)
        with self._held_lock:
            looked_up = version.metadata.uid in self._prepared
        if source is not None and not looked_up:
            reads.source, reads.head = source, self._reads_ahead.submit(self.store.head, source)

    def _verify_ahead(self, version: DeploymentVersion, deployment: Obj) -> None:
        """Start verifying a new static version's bundle before its number is claimed: the
        claim's three round trips overlap the verification instead of preceding it.  Only
        what decides nothing is done early: the bundle is read and checked into a temporary
        file; the attempt is recorded (``building``) and the release stored only once the
        version is numbered (``_conclude_ahead``).  Only where the usual path would start the
        same ingestion at once: a first attempt, sources and kind in order, no earlier
        version to wait for, a bundle of acceptable size, a slot free now."""
        ahead = self._ahead.get(version.metadata.uid)
        adopted = self._adopt(version)
        if adopted is not None:
            self._ahead.setdefault(version.metadata.uid, _ReadsAhead()).verifying = adopted
            return
        if ahead is None:
            return
        try:
            listed = ahead.unnumbered.result() if ahead.unnumbered else []
        except Exception:  # noqa: BLE001 - the usual path meets the same error and says so
            return
        if _earlier_unnumbered(version, deployment, listed) is not None:
            return  # this reconcile waits: no HEAD, no verification
        self._head_ahead(version, ahead)
        if (
            ahead.head is None
            or version.status.build_attempts is not None
            or self._check_kind(version, deployment)
            or self._check_sources(version)
        ):
            return
        try:
            info = ahead.head.result()
        except Exception:  # noqa: BLE001 - the usual path meets the same error and says so
            return
        if info is None or info.size > self.config.limits.max_bundle_bytes:
            return
        assert ahead.source is not None  # the HEAD was asked for it
        slot = self.slots.acquire(version.metadata.namespace, version.metadata.uid, info.size)
        if isinstance(slot, Queued):
            return  # the usual path queues it
        future = self._verifying.submit(
            self.static_build.verify, version, Prepared(ahead.source, info.size), self.stopping, slot.niceness
        )
        ahead.verifying = _Verification(future, slot, version.status.id)

    def _bundle_source(self, version: DeploymentVersion) -> str | None:
        """The bundle a static version may read (never one outside its tenant's uploads)."""
        if version.spec.kind != VersionKind.STATIC or version.spec.artifact is None or version.status.artifact_uri:
            return None
        try:
            return self.config.source_policy.check(version.spec.artifact.uri, version.metadata.namespace)
        except SourceNotAllowed:
            return None

    def _drop_reads_ahead(self, uid: str) -> None:
        with self._held_lock:
            reads = self._ahead.pop(uid, None)
        if reads is None:
            return
        for future in (reads.unnumbered, reads.head):
            if future is not None:
                future.cancel()  # not started yet: never; running: its answer goes unused
        if reads.verifying is not None:
            # Abandoned (the reconcile stopped before the number was claimed): the next
            # reconcile adopts it; if none does by the time it ends, its slot is given back
            # and what it made dropped. Never a second ingestion of the version beside it.
            abandoned = reads.verifying
            with self._held_lock:
                self._abandoned[uid] = abandoned
            abandoned.future.add_done_callback(lambda _: self._end_abandoned(uid, abandoned))

    def _end_abandoned(self, uid: str, abandoned: _Verification) -> None:
        with self._held_lock:
            if self._abandoned.get(uid) is not abandoned:
                return  # adopted
            del self._abandoned[uid]
        self.slots.release(abandoned.slot)
        if not abandoned.future.cancelled() and abandoned.future.exception() is None:
            outcome = abandoned.future.result()
            if isinstance(outcome, Verified):
                outcome.discard()

    def _adopt(self, version: DeploymentVersion) -> _Verification | None:
        """An abandoned verification of this version, taken over; a Retry while one of another
        identity (one another writer gave the version meanwhile) still runs."""
        uid = version.metadata.uid
        with self._held_lock:
            abandoned = self._abandoned.get(uid)
            if abandoned is None:
                return None
            if abandoned.version_id == version.status.id:
                del self._abandoned[uid]
                return abandoned
        raise Retry("an earlier verification of this version is still running", delay=1.0)

    def _ingest(
        self, version: DeploymentVersion, prepared: Prepared | Callable[[], Verified | Refused], niceness: int
    ) -> Built | Rejected:
        """One attempt; every way out that decides nothing closes the attempt and says why.
        ``prepared``: the bundle to verify, or the answer of a verification already under way."""
        try:
            if not isinstance(prepared, Prepared):
                return self.static_build.conclude(version, prepared())
            return self.static_build.run(version, prepared, self.stopping, niceness)
        except StoreWait as wait:
            self._end_attempt(version, wait.health)
            raise
        except IngestionInterrupted as exc:
            self._end_attempt(version, Health.reconciling(Reason.BUILDING, f"{exc}; the ingestion starts again"))
            raise Retry(str(exc), delay=1.0, planned=False) from exc
        except IngestionTimedOut as exc:
            self._end_attempt(version, Health.reconciling(Reason.STORE_UNAVAILABLE, f"{exc}; retrying"))
            raise Retry(str(exc), delay=30.0, planned=False) from exc
        except WorkerCrashed as exc:
            count = self._interrupted(version) + 1
            message = f"{exc}; retrying (interruption {count} of {self.config.max_interrupted_attempts})"
            self._end_attempt(version, Health.reconciling(Reason.BUILDING, message), crashed=True)
            raise Retry(message, delay=5.0, planned=False) from exc

    # ------------------------------------------------------------------ attempts (crash loops)
    def _interrupted(self, version: DeploymentVersion) -> int:
        """Attempts of this version that abnormal deaths ended, including one found open now."""
        attempts = version.status.build_attempts or BuildAttempts()
        foreign = attempts.running is not None and attempts.running != self.run_id
        return attempts.interrupted + (1 if foreign else 0)

    def _holds_attempt(self, version: DeploymentVersion) -> bool:
        attempts = version.status.build_attempts
        return attempts is not None and attempts.running == self.run_id

    def _check_interruptions(self, version: DeploymentVersion) -> Failure | None:
        count, limit = self._interrupted(version), self.config.max_interrupted_attempts
        if count < limit:
            return None
        what = "ingestion" if version.spec.kind == VersionKind.STATIC else "health gate"
        return Failure(
            Reason.INGESTION_ABORTED,
            f"its {what} was interrupted by an abnormal operator death {count} times "
            f"(MIOSA_MAX_INTERRUPTED_ATTEMPTS={limit}); not trying again",
        )

    def _begin_attempt(self, version: DeploymentVersion, doing: str) -> DeploymentVersion:
        """The status write that starts an attempt: it also sets ``building`` the first time."""
        now = self.clock()
        interrupted = self._interrupted(version)
        if interrupted:
            log.warning(
                "%s/%s: attempt %d after %d abnormal interruptions",
                version.metadata.namespace,
                version.metadata.name,
                interrupted + 1,
                interrupted,
            )
        status: Obj = {
            "buildAttempts": {"running": self.run_id, "interrupted": interrupted, "startedAt": iso(now)},
            "conditions": self._conditions(version, Health.reconciling(Reason.BUILDING, doing), now),
        }
        if version.status.state == VersionState.CREATED:
            states.transition(version.status.state, VersionState.BUILDING)
            status["state"] = VersionState.BUILDING.value
        version = self._patch_status(version, status)
        with self._held_lock:
            self._held.add((version.metadata.namespace, version.metadata.name))
        return version

    def _end_attempt(self, version: DeploymentVersion, health: Health, crashed: bool = False) -> None:
        """An attempt ended without a decision: it is no longer held; ``health`` says why."""
        attempts: Obj = {"running": None}
        if crashed:
            attempts["interrupted"] = self._interrupted(version) + 1
        self._patch_status(version, {"buildAttempts": attempts, "conditions": self._conditions(version, health, self.clock())})
        self._forget_attempt(version)

    def _forget_attempt(self, version: DeploymentVersion) -> None:
        with self._held_lock:
            self._held.discard((version.metadata.namespace, version.metadata.name))

    def forget(self, uid: str) -> None:
        """The version settled (it left the watch) or is gone: no reconcile will claim for it."""
        with self._held_lock:
            self._numbers_sent.discard(uid)
            self._unwritten_ids.pop(uid, None)

    def release_attempts(self) -> int:
        """Graceful stop: clear every attempt this run holds, so none counts as interrupted.

        Best effort (the API server may be gone too): one that stays held counts once."""
        with self._held_lock:
            held, self._held = sorted(self._held), set()
        released = 0
        for namespace, name in held:
            try:
                self.kube.patch_status(meta.VERSION_PLURAL, namespace, name, {"buildAttempts": {"running": None}})
                released += 1
            except ApiError as exc:
                log.warning("could not release the build attempt of %s/%s: %s", namespace, name, exc)
        return released

    def _show(self, version: DeploymentVersion, health: Health) -> None:
        """Say on the version why it waits, once per change (not on every poll)."""
        ready = get_condition(version.status.conditions, READY)
        if ready is not None and ready.reason == health.reason and ready.message == health.message:
            return
        self._patch_status(version, {"conditions": self._conditions(version, health, self.clock())})

    def _wake_deployment(self, version: DeploymentVersion, deployment: Obj, state: VersionState) -> None:
        """A Deployment that may act on this outcome hears of it through an annotation: an
        Auto one (a new ready version), or one whose promotedVersion names this version
        (promotion is intent: it waits with WaitingForVersion until the version settles)."""
        spec = deployment.get("spec") or {}
        if spec.get("promotionPolicy") != "Auto" and spec.get("promotedVersion") != version.metadata.name:
            return
        settled = f"{version.metadata.name}:{state.value}"
        patch = {"metadata": {"annotations": {meta.ANNOTATION_VERSION_SETTLED: settled}}}
        # The version is settled, so a later reconcile would not come back here: retry inline.
        for attempt in range(WAKE_ATTEMPTS):
            try:
                self.kube.patch(meta.DEPLOYMENT_PLURAL, version.metadata.namespace, version.spec.deployment_ref.name, patch)
                return
            except TransientApiError:
                if attempt == WAKE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))

    # ------------------------------------------------------------------ outcomes
    def _become_ready(self, version: DeploymentVersion, fields: Obj) -> None:
        now = self.clock()
        status = {
            **fields,
            "buildAttempts": {"running": None},
            "state": VersionState.READY.value,
            "readyAt": iso(now),
            "observedGeneration": version.metadata.generation,
            "conditions": self._conditions(version, Health(True, Reason.READY, "artifact verified and stored; promotable"), now),
        }
        if version.status.build_log_uri and "buildLogUri" not in status:
            status["buildLogUri"] = version.status.build_log_uri
        self._patch_status(version, status)
        self._forget_attempt(version)
        self.events.normal(object_ref(version), Reason.READY, "version is ready to be promoted")

    def _fail(self, version: DeploymentVersion, failure: Failure) -> None:
        now = self.clock()
        status: Obj = {
            "state": VersionState.FAILED.value,
            "buildAttempts": {"running": None, "interrupted": self._interrupted(version)},
            "observedGeneration": version.metadata.generation,
            "conditions": self._conditions(version, Health.stalled(failure.reason, failure.message), now),
        }
        if version.status.build_log_uri:
            status["buildLogUri"] = version.status.build_log_uri
        self._patch_status(version, status)
        self._forget_attempt(version)
        self.events.warning(object_ref(version), failure.reason, failure.message)

    def _set_state(self, version: DeploymentVersion, state: VersionState, health: Health) -> DeploymentVersion:
        states.transition(version.status.state, state)
        return self._patch_status(version, {"state": state.value, "conditions": self._conditions(version, health, self.clock())})

    def _conditions(self, version: DeploymentVersion, health: Health, now: datetime) -> list[Obj]:
        conditions = health_conditions(version.status.conditions, health, generation=version.metadata.generation, now=now)
        return [c.wire() for c in conditions]

    # ------------------------------------------------------------------ status writes
    def _draft(
        self, version: DeploymentVersion, status: Obj, then: Callable[[DeploymentVersion], None] | None = None
    ) -> DeploymentVersion:
        """Decide ``status`` now, write it with the next status write (or ``_flush``); ``then``
        runs once it is written.  Returns the version as it will be."""
        with self._held_lock:
            draft = self._drafts.setdefault(version.metadata.uid, _Draft())
        draft.status.update(status)
        if then is not None:
            draft.then.append(then)
        return _with_status(version, status)

    def _flush(self, version: DeploymentVersion) -> None:
        """Write what is still drafted: nothing decided outlives the reconcile unwritten."""
        if version.metadata.uid in self._drafts:
            self._patch_status(version, {})

    def _patch_status(self, version: DeploymentVersion, status: Obj) -> DeploymentVersion:
        self._settle(version.metadata.uid)
        with self._held_lock:
            draft = self._drafts.pop(version.metadata.uid, None)
        merged = {**draft.status, **status} if draft is not None else status
        if merged.get("versionNumber"):
            with self._held_lock:  # before the write: it may succeed even if we never hear so
                self._numbers_sent.add(version.metadata.uid)
        # A failed write drops the draft: the next run decides it again (a claimed number is
        # found in the Deployment's pendingNumbers, an unwritten identity is drafted again with the same id).
        body = self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, merged)
        written = DeploymentVersion.model_validate(body)
        if draft is not None and draft.then:
            following = self._after_writes.submit(_run_all, draft.then, written)
            with self._held_lock:
                self._following[version.metadata.uid] = following
        return written

    def _settle(self, uid: str) -> None:
        """Wait for what followed this version's last status write; its error is raised here."""
        with self._held_lock:
            following = self._following.pop(uid, None)
        if following is not None:
            following.result()


def _run_all(steps: list[Callable[[DeploymentVersion], None]], version: DeploymentVersion) -> None:
    for step in steps:
        step(version)


@dataclasses.dataclass
class _ReadsAhead:
    unnumbered: Future[list[Obj]] | None = None
    head: Future[ObjectInfo | None] | None = None
    source: str | None = None
    """What ``head`` looks up: the bundle, confined to the tenant's uploads."""
    verifying: _Verification | None = None


@dataclasses.dataclass(frozen=True)
class _Verification:
    """A bundle being verified ahead of its version's number, and the slot it holds."""

    future: Future[Verified | Refused]
    slot: Slot
    version_id: str | None


def _earlier_unnumbered(version: DeploymentVersion, deployment: Obj | None, listed: list[Obj]) -> str | None:
    """The name of a version in ``listed`` created before ``version`` that has no number and
    no claim yet (numbers follow creation order: creationTimestamp, then name)."""
    claimed = ((deployment or {}).get("status") or {}).get("pendingNumbers") or {}
    mine = (version.metadata.creation_timestamp, version.metadata.name)
    for other in listed:
        if (other.get("status") or {}).get("versionNumber") or other["metadata"].get("uid") in claimed:
            continue
        created = parse_time(other["metadata"].get("creationTimestamp"))
        if created is not None and mine[0] is not None and (created, other["metadata"]["name"]) < mine:
            return str(other["metadata"]["name"])
    return None


@dataclasses.dataclass
class _Draft:
    status: Obj = dataclasses.field(default_factory=dict)
    then: list[Callable[[DeploymentVersion], None]] = dataclasses.field(default_factory=list)


def _with_status(version: DeploymentVersion, status: Obj) -> DeploymentVersion:
    """``version`` as a merge patch of ``status`` will leave it."""
    wire = version.wire()
    merged = {**(wire.get("status") or {}), **status}
    wire["status"] = {key: value for key, value in merged.items() if value is not None}
    return DeploymentVersion.model_validate(wire)
