"""Bring a DeploymentVersion from ``created`` to ``ready`` or ``failed``.

``reconcile`` is level-based and idempotent: it reads the object and does the next missing
step (identity → number → building → ingest or health gate → ready/failed), writing status
after each step.  Running it twice, or after the operator was killed half-way, continues
where the last run stopped; that is what makes the kopf handler around it safe to retry.

Waiting (for the Deployment to appear, for the verification workload) and transient errors
(API 5xx/timeouts/conflicts, store timeouts) raise ``Retry``; the handler turns it into a
kopf retry with backoff.  Only a decision about the version itself ends in ``failed``.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..api import meta
from ..api.models import (
    DeploymentVersion,
    VersionKind,
    VersionState,
)
from ..config import OperatorConfig
from ..domain import states
from ..domain.conditions import READY, get_condition, set_condition
from ..domain.ids import new_deployment_id, new_version_id
from ..domain.labels import version_labels
from ..domain.numbering import claim_number, counter_from_status
from ..ingest.buildlog import BuildLog
from ..ingest.bundle import BundleRejected, ingest_bundle
from ..kube.client import Conflict, Kube, TransientApiError
from ..render import workloads
from ..store.base import (
    ArtifactNotFound,
    ArtifactStore,
    StoreError,
    TransientStoreError,
)
from ..store.router import join_uri

Obj = dict[str, Any]
Clock = Callable[[], datetime]

# A bundle that is not in the store yet may still be uploading (GitOps applies objects in
# any order); after this long, "not found" is a decision, not a wait.
MISSING_ARTIFACT_GRACE = timedelta(minutes=2)
NUMBER_CLAIM_ATTEMPTS = 50
WAKE_ATTEMPTS = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


class Retry(Exception):
    """Not done yet: call ``reconcile`` again after ``delay`` seconds.

    ``planned`` marks an expected wait (a Deployment that does not exist yet, a health gate
    in progress) as opposed to a transient failure worth a warning.
    """

    def __init__(self, message: str, delay: float = 2.0, planned: bool = True) -> None:
        super().__init__(message)
        self.delay = delay
        self.planned = planned


class EventSink(Protocol):
    def normal(self, body: Obj, reason: str, message: str) -> None: ...
    def warning(self, body: Obj, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


class VersionController:
    def __init__(
        self,
        kube: Kube,
        store: ArtifactStore,
        config: OperatorConfig,
        events: EventSink,
        clock: Clock = utcnow,
    ) -> None:
        self.kube, self.store, self.config, self.events, self.clock = kube, store, config, events, clock

    # ------------------------------------------------------------------ entry point
    def reconcile(self, body: Obj) -> VersionState:
        version = DeploymentVersion.model_validate(body)
        if version.status.state in (VersionState.READY, VersionState.ARCHIVED, VersionState.FAILED):
            self._ensure_labels(version)
            return version.status.state
        version = self._ensure_identity(version)
        self._ensure_labels(version)
        deployment = self.kube.get(meta.DEPLOYMENT_PLURAL, version.metadata.namespace, version.spec.deployment_ref.name)
        if deployment is None:
            self._wait_for_deployment(version)
        assert deployment is not None
        version = self._ensure_number(version, deployment)
        if version.status.state == VersionState.CREATED:
            version = self._set_state(version, VersionState.BUILDING, "Building", "verifying the artifact")
        failure = self._check_kind(version, deployment)
        if failure is None:
            failure = self._build(version)
        if failure is not None:
            self._fail(version, failure)
            return VersionState.FAILED
        self._wake_auto_promotion(version, deployment)
        return VersionState.READY

    # ------------------------------------------------------------------ identity and numbering
    def _ensure_identity(self, version: DeploymentVersion) -> DeploymentVersion:
        if version.status.id and version.status.state:
            return version
        now = self.clock()
        status: Obj = {
            "id": version.status.id or new_version_id(),
            "tenantId": version.metadata.namespace,
            "state": VersionState.CREATED.value,
            "observedGeneration": version.metadata.generation,
            "conditions": self._conditions(version, False, "Pending", "waiting to be numbered", now),
        }
        return self._patch_status(version, status)

    def _wait_for_deployment(self, version: DeploymentVersion) -> None:
        name = version.spec.deployment_ref.name
        ready = get_condition(version.status.conditions, READY)
        if ready is None or ready.reason != "DeploymentNotFound":
            message = f"Deployment {name!r} does not exist in namespace {version.metadata.namespace!r}; waiting for it"
            self._patch_status(
                version, {"conditions": self._conditions(version, False, "DeploymentNotFound", message, self.clock())}
            )
            self.events.normal(object_ref(version), "DeploymentNotFound", message)
        raise Retry(f"waiting for Deployment {name}", delay=max(self.config.poll_interval, 1.0))

    def _ensure_number(self, version: DeploymentVersion, deployment: Obj | None = None) -> DeploymentVersion:
        ns, dep_name, uid = version.metadata.namespace, version.spec.deployment_ref.name, version.metadata.uid
        if version.status.version_number and version.status.deployment_id:
            # Numbered, but the run that wrote the number may have died (or hit a 5xx) before
            # releasing its claim: release it now, or pendingNumbers grows until the schema's
            # cap makes every later claim on this Deployment fail.
            pending = ((deployment or {}).get("status") or {}).get("pendingNumbers") or {}
            if uid in pending:
                self._release_claim(ns, dep_name, uid)
            return version
        self._wait_for_earlier_versions(version, deployment)
        for _ in range(NUMBER_CLAIM_ATTEMPTS):
            deployment = self.kube.get(meta.DEPLOYMENT_PLURAL, ns, dep_name)
            if deployment is None:
                self._wait_for_deployment(version)
            assert deployment is not None
            dep_status = deployment.get("status") or {}
            rv = deployment["metadata"]["resourceVersion"]
            claim = claim_number(counter_from_status(dep_status), uid)
            patch: Obj = {}
            if claim.needs_write:
                patch = {"lastVersionNumber": claim.number, "pendingNumbers": {uid: claim.number}}
            if not dep_status.get("id"):
                patch["id"] = new_deployment_id()
            try:
                if patch:
                    deployment = self.kube.patch_status(meta.DEPLOYMENT_PLURAL, ns, dep_name, patch, resource_version=rv)
            except Conflict:
                continue  # somebody else claimed a number or set the id; read again
            version = self._patch_status(
                version,
                {"versionNumber": claim.number, "deploymentId": deployment["status"]["id"]},
            )
            self._release_claim(ns, dep_name, uid)
            self._ensure_labels(version)
            return version
        raise Retry("too much contention on the version counter", delay=1.0, planned=False)

    def _wait_for_earlier_versions(self, version: DeploymentVersion, deployment: Obj | None) -> None:
        """Let versions created earlier take their numbers first, so numbers follow creation
        order (creationTimestamp, then name) as users expect.  Bounded by the configured
        patience: uniqueness and gaplessness never depend on it, only the order does."""
        created = version.metadata.creation_timestamp
        patience = timedelta(seconds=self.config.number_order_patience)
        if created is None or self.clock() - created >= patience:
            return
        claimed = ((deployment or {}).get("status") or {}).get("pendingNumbers") or {}
        mine = (created, version.metadata.name)
        selector = f"spec.deploymentRef.name={version.spec.deployment_ref.name}"
        for other in self.kube.list(meta.VERSION_PLURAL, version.metadata.namespace, field_selector=selector):
            if (other.get("status") or {}).get("versionNumber") or other["metadata"].get("uid") in claimed:
                continue
            theirs = (_parse_time(other["metadata"].get("creationTimestamp")), other["metadata"]["name"])
            if theirs[0] is not None and (theirs[0], theirs[1]) < mine:
                raise Retry(f"numbering after the earlier version {theirs[1]}", delay=0.3)

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
        self.kube.patch(
            meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, {"metadata": {"labels": wanted}}
        )

    # ------------------------------------------------------------------ building
    def _check_kind(self, version: DeploymentVersion, deployment: Obj) -> Failure | None:
        dep_kind = (deployment.get("spec") or {}).get("kind")
        if dep_kind and dep_kind != version.spec.kind.value:
            return Failure(
                "KindMismatch",
                f"version kind {version.spec.kind.value!r} does not match Deployment kind {dep_kind!r}",
            )
        return None

    def _build(self, version: DeploymentVersion) -> Failure | None:
        if version.spec.kind == VersionKind.STATIC:
            return self._build_static(version)
        return self._build_dynamic(version)

    def release_prefix(self, version: DeploymentVersion) -> str:
        status = version.status
        assert status.deployment_id and status.id
        return join_uri(self.config.releases_uri, version.metadata.namespace, status.deployment_id, status.id)

    def _build_static(self, version: DeploymentVersion) -> Failure | None:
        artifact = version.spec.artifact
        assert artifact is not None, "the CRD requires an artifact for static versions"
        prefix = self.release_prefix(version)
        canonical_uri, log_uri = join_uri(prefix, "dist.tar.zst"), join_uri(prefix, "build.log")
        log = BuildLog(clock=self.clock)
        log.line(f"version {version.metadata.namespace}/{version.metadata.name} ({version.status.id})")
        log.line(f"source {artifact.uri} expecting sha256 {artifact.sha256}")
        if not self.config.source_allowed(artifact.uri, version.metadata.namespace):
            message = f"{artifact.uri} is not an allowed source for namespace {version.metadata.namespace!r}"
            log.line(f"FAILED SourceNotAllowed: {message}")
            self._write_log(log_uri, log, version)
            return Failure("SourceNotAllowed", message)
        with tempfile.TemporaryFile(prefix="miosa-release-") as out:
            try:
                with self.store.open_read(artifact.uri) as source:
                    result = ingest_bundle(
                        source,
                        out,
                        expected_sha256=artifact.sha256,
                        entrypoint=artifact.entrypoint,
                        limits=self.config.limits,
                        log=log.line,
                    )
            except BundleRejected as rejected:
                log.line(f"FAILED {rejected.reason}: {rejected.message}")
                self._write_log(log_uri, log, version)
                return Failure(rejected.reason, rejected.message)
            except ArtifactNotFound as exc:
                return self._missing_artifact(version, artifact.uri, exc, log, log_uri)
            except TransientStoreError as exc:
                raise Retry(f"artifact store: {exc}", delay=5.0, planned=False) from exc
            except StoreError as exc:  # a URI this operator may not or cannot read: the tenant's mistake
                log.line(f"FAILED ArtifactUnreadable: {exc}")
                self._write_log(log_uri, log, version)
                return Failure("ArtifactUnreadable", f"cannot read {artifact.uri}: {exc}")
            out.seek(0)
            stored_sha = self._store_canonical(canonical_uri, out, result.canonical_bytes, result.canonical_sha256, log)
        log.line(f"ready: {result.manifest.files} files, {result.manifest.total_bytes} bytes, release {canonical_uri}")
        self._write_log(log_uri, log, version)
        self._become_ready(
            version,
            {
                "artifactUri": canonical_uri,
                "artifactSha256": stored_sha,
                "artifactManifest": {
                    "files": result.manifest.files,
                    "totalBytes": result.manifest.total_bytes,
                    "entrypoint": result.manifest.entrypoint,
                },
                "buildLogUri": log_uri,
            },
        )
        return None

    def _store_canonical(self, uri: str, data: Any, size: int, sha256: str, log: BuildLog) -> str:
        """Write the release once; if an earlier attempt already did, keep it and use its hash."""
        try:
            if self.store.put_if_absent(uri, data, size=size, content_type="application/zstd"):
                log.line(f"stored canonical release {uri} ({size} bytes, sha256 {sha256})")
                return sha256
            existing = self._hash_object(uri)
        except TransientStoreError as exc:
            raise Retry(f"artifact store: {exc}", delay=5.0, planned=False) from exc
        note = "identical" if existing == sha256 else "kept as stored (it is never overwritten)"
        log.line(f"canonical release {uri} already stored by an earlier attempt: {note}")
        return existing

    def _hash_object(self, uri: str) -> str:
        digest = hashlib.sha256()
        with self.store.open_read(uri) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def _write_log(self, uri: str, log: BuildLog, version: DeploymentVersion) -> None:
        try:
            self.store.put_bytes_if_absent(uri, log.render(), content_type="text/plain; charset=utf-8")
        except TransientStoreError as exc:
            raise Retry(f"artifact store: {exc}", delay=5.0, planned=False) from exc
        if version.status.build_log_uri != uri:
            version.status.build_log_uri = uri

    def _missing_artifact(
        self, version: DeploymentVersion, uri: str, exc: Exception, log: BuildLog, log_uri: str
    ) -> Failure:
        created = version.metadata.creation_timestamp or self.clock()
        if self.clock() - created < MISSING_ARTIFACT_GRACE:
            raise Retry(f"artifact {uri} not found yet", delay=5.0) from exc
        log.line(f"FAILED ArtifactNotFound: {uri}")
        self._write_log(log_uri, log, version)
        return Failure("ArtifactNotFound", f"artifact {uri} does not exist in the store")

    def _build_dynamic(self, version: DeploymentVersion) -> Failure | None:
        runtime = version.spec.runtime
        assert runtime is not None, "the CRD requires a runtime for dynamic versions"
        invalid = validate_runtime(runtime)
        if invalid:
            return Failure("InvalidRuntime", invalid)
        ns = version.metadata.namespace
        name = workloads.verification_name(version)
        timeout = self.config.health_gate_timeout
        workload = self.kube.get_workload(ns, name)
        if workload is None:
            workload = self._create_verification(version, int(timeout))
        if workloads.is_available(workload):
            self.kube.delete_workload(ns, name)
            self._become_ready(version, {})
            return None
        started = _parse_time(workload["metadata"].get("creationTimestamp")) or self.clock()
        if self.clock() - started > timedelta(seconds=timeout):
            detail = self._why_not_ready(ns, workload)
            self.kube.delete_workload(ns, name)
            return Failure(
                "HealthCheckFailed",
                f"verification workload did not become ready on {runtime.health_check_path} "
                f"(port {runtime.port}) within {timeout:.0f}s: {detail}",
            )
        raise Retry("health gate running", delay=self.config.poll_interval)

    def _create_verification(self, version: DeploymentVersion, timeout: int) -> Obj:
        body = workloads.verification_workload(version, timeout)
        try:
            workload = self.kube.create_workload(version.metadata.namespace, body)
        except Conflict:  # created by an earlier attempt a moment ago
            workload = self.kube.get_workload(version.metadata.namespace, body["metadata"]["name"]) or body
        self.events.normal(
            object_ref(version), "HealthGateStarted", f"verification workload {body['metadata']['name']} created"
        )
        return workload

    def _why_not_ready(self, namespace: str, workload: Obj) -> str:
        conditions = (workload.get("status") or {}).get("conditions") or []
        messages = [f"{c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}" for c in conditions]
        selector = ",".join(f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items())
        try:
            pods = self.kube.list_pods(namespace, selector)
        except TransientApiError:
            pods = []
        for pod in pods[:3]:
            phase = (pod.get("status") or {}).get("phase", "?")
            pod_conditions = (pod.get("status") or {}).get("conditions") or []
            not_ready = [f"{c.get('type')}: {c.get('message') or c.get('reason') or c.get('status')}" for c in pod_conditions if c.get("status") != "True"]
            messages.append(f"pod {pod['metadata']['name']} {phase} {'; '.join(not_ready)}")
        if not pods:
            messages.append("no pod was created")
        return "; ".join(m.strip() for m in messages if m.strip())[:1500]

    def _wake_auto_promotion(self, version: DeploymentVersion, deployment: Obj) -> None:
        """An Auto Deployment reacts to a new ready version through this annotation."""
        if (deployment.get("spec") or {}).get("promotionPolicy") != "Auto":
            return
        patch = {"metadata": {"annotations": {meta.ANNOTATION_NEWEST_READY: version.metadata.name}}}
        # The version is already ready, so a later reconcile would not come back here: retry inline.
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
            "state": VersionState.READY.value,
            "readyAt": _iso(now),
            "observedGeneration": version.metadata.generation,
            "conditions": self._conditions(version, True, "Ready", "artifact verified and stored; promotable", now),
        }
        if version.status.build_log_uri and "buildLogUri" not in status:
            status["buildLogUri"] = version.status.build_log_uri
        self._patch_status(version, status)
        self.events.normal(object_ref(version), "Ready", "version is ready to be promoted")

    def _fail(self, version: DeploymentVersion, failure: Failure) -> None:
        now = self.clock()
        status: Obj = {
            "state": VersionState.FAILED.value,
            "observedGeneration": version.metadata.generation,
            "conditions": self._conditions(version, False, failure.reason, failure.message, now),
        }
        if version.status.build_log_uri:
            status["buildLogUri"] = version.status.build_log_uri
        self._patch_status(version, status)
        self.events.warning(object_ref(version), failure.reason, failure.message)

    def _set_state(self, version: DeploymentVersion, state: VersionState, reason: str, message: str) -> DeploymentVersion:
        states.transition(version.status.state, state)
        return self._patch_status(
            version,
            {"state": state.value, "conditions": self._conditions(version, False, reason, message, self.clock())},
        )

    def _conditions(
        self, version: DeploymentVersion, ready: bool, reason: str, message: str, now: datetime
    ) -> list[Obj]:
        conditions = set_condition(
            version.status.conditions,
            type=READY,
            status=ready,
            reason=reason,
            message=message,
            generation=version.metadata.generation,
            now=now,
        )
        return [c.wire() for c in conditions]

    def _patch_status(self, version: DeploymentVersion, status: Obj) -> DeploymentVersion:
        body = self.kube.patch_status(meta.VERSION_PLURAL, version.metadata.namespace, version.metadata.name, status)
        return DeploymentVersion.model_validate(body)


def object_ref(obj: Any) -> Obj:
    """What an event needs to point at its object."""
    return {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "metadata": {"name": obj.metadata.name, "namespace": obj.metadata.namespace, "uid": obj.metadata.uid},
    }


def validate_runtime(runtime: Any) -> str:
    """What the schema cannot say about a runtime; empty when valid."""
    if any(c.isspace() for c in runtime.image):
        return f"runtime.image {runtime.image!r} contains whitespace"
    names = [e.name for e in runtime.env or []]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        return f"runtime.env names are duplicated: {', '.join(duplicates)}"
    return ""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))
