"""Building a static version: verify the uploaded bundle and store its canonical release.

Two steps, so that the version controller can queue between them (``ingestion_slots``):

1. ``prepare``: decide where the bundle is and how big, without reading it — the source is
   already confined to the tenant (``store.sources``, checked by the controller); a ``HEAD``
   gives its size (the slot's bytes in flight) or says it is not there yet.
2. ``run`` = ``verify`` then ``conclude``. ``verify`` streams it once through an ingestion
   worker (``ingest.isolation``: limited memory and CPU) into a temporary file and stores
   nothing, so it may start before the version has its number (the controller overlaps it
   with the number claim). ``conclude``, once the version is numbered and its attempt
   recorded, writes the canonical ``dist.tar.zst`` with ``put_if_absent`` so a retry after
   a crash never writes a different object and an existing one is never overwritten
   (ingestion is deterministic anyway). A human-readable, timestamped ``build.log`` is
   written next to it, for failures too. Nothing is ever written outside
   ``<releases>/<tenant>/<dep id>/<ver id>/``.

Who is at fault decides the outcome. The bundle's own faults (``BundleRejected``, a source
still missing after ``MISSING_ARTIFACT_GRACE``, a URI that can never name an object) are
``Rejected``: the version fails. Everything else raises ``StoreWait`` (a ``Retry`` that says
what to show): a store that times out or answers 5xx is ``StoreUnavailable`` (Reconciling), a
store that refuses the operator's credentials or lacks a bucket is ``StoreAccessDenied``
(Stalled: a person must act); either way the same version goes on once the store is fixed.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import IO, Any

from ..api.conditions import Reason
from ..api.models import DeploymentVersion
from ..domain.conditions import Health
from ..ingest.buildlog import BuildLog
from ..ingest.bundle import BundleRejected, IngestResult, ingest_bundle
from ..ingest.common import human
from ..ingest.isolation import Budget, Usage, ingest_isolated
from ..settings import Settings
from ..store.base import ArtifactNotFound, ArtifactStore, ObjectInfo, StoreAccessDenied, StoreError, TransientStoreError
from ..store.router import join_uri
from .common import Clock, Failure, Obj, Retry

# A bundle that is not in the store yet may still be uploading (GitOps applies objects in
# any order); after this long, "not found" is a decision, not a wait.
MISSING_ARTIFACT_GRACE = timedelta(minutes=2)
STORE_RETRY_DELAY = 5.0


class StoreWait(Retry):
    """Not the version's fault: retry later, and meanwhile show ``health`` on the version."""

    def __init__(self, health: Health, delay: float = STORE_RETRY_DELAY, planned: bool = False) -> None:
        super().__init__(health.message, delay=delay, planned=planned)
        self.health = health


def store_wait(exc: TransientStoreError, doing: str) -> StoreWait:
    if isinstance(exc, StoreAccessDenied):
        return StoreWait(Health.stalled(Reason.STORE_ACCESS_DENIED, f"{doing}: {exc}; retrying until a person fixes the store"))
    return StoreWait(Health.reconciling(Reason.STORE_UNAVAILABLE, f"{doing}: {exc}; retrying"))


@dataclass(frozen=True)
class Prepared:
    source: str
    """The normalised source URI: what was checked is what is read."""
    size: int


@dataclass(frozen=True)
class Built:
    """Status fields of a verified, stored release."""

    fields: Obj


@dataclass(frozen=True)
class Rejected:
    failure: Failure
    build_log_uri: str | None


@dataclass
class Verified:
    """A bundle that passed: its canonical release in a temporary file (``conclude`` or
    ``discard`` closes it), and the build log so far."""

    result: IngestResult
    release: IO[bytes]
    log: BuildLog

    def discard(self) -> None:
        self.release.close()


@dataclass(frozen=True)
class Refused:
    """A bundle that did not pass, and why; the log is stored by ``conclude``."""

    reason: Reason
    message: str
    log: BuildLog


Ingest = Callable[..., IngestResult]


def in_process(
    source: Any,
    out: Any,
    *,
    budget: Budget,
    cancel: threading.Event | None,
    usage: Callable[[Usage], None],
    tenant: str | None = None,
    **kwargs: Any,
) -> IngestResult:
    """``ingest_bundle`` in the operator's own process (tests of the controller; no limits)."""
    del budget, cancel, usage, tenant
    return ingest_bundle(source, out, **kwargs)


class StaticBuild:
    def __init__(self, store: ArtifactStore, config: Settings, clock: Clock, ingest: Ingest = ingest_isolated) -> None:
        self.store, self.config, self.clock, self.ingest = store, config, clock, ingest

    def release_prefix(self, version: DeploymentVersion) -> str:
        status = version.status
        assert status.deployment_id and status.id
        return join_uri(self.config.releases_uri, version.metadata.namespace, status.deployment_id, status.id)

    # ------------------------------------------------------------------ step 1
    def prepare(
        self, version: DeploymentVersion, source: str, head: Future[ObjectInfo | None] | None = None
    ) -> Prepared | Rejected:
        """The bundle's size, without reading it; raises ``StoreWait`` while it is missing.
        ``head``: the HEAD of ``source`` if it was already asked for (its errors are the same)."""
        try:
            info = head.result() if head is not None else self.store.head(source)
        except TransientStoreError as exc:
            raise store_wait(exc, f"cannot look up {source}") from exc
        except StoreError as exc:
            return self.reject(version, Reason.ARTIFACT_UNREADABLE, f"cannot read {source}: {exc}")
        if info is None:
            created = version.metadata.creation_timestamp or self.clock()
            waited = self.clock() - created
            if waited < MISSING_ARTIFACT_GRACE:
                message = f"{source} is not in the store yet; waiting up to {MISSING_ARTIFACT_GRACE.seconds} s for the upload"
                raise StoreWait(Health.reconciling(Reason.ARTIFACT_PENDING, message), delay=5.0, planned=True)
            return self.reject(version, Reason.ARTIFACT_NOT_FOUND, f"artifact {source} does not exist in the store")
        limit = self.config.limits.max_bundle_bytes
        if info.size > limit:
            return self.reject(version, Reason.BUNDLE_TOO_LARGE, f"the bundle is {info.size} bytes, larger than {human(limit)}")
        return Prepared(source, info.size)

    # ------------------------------------------------------------------ step 2
    def run(
        self, version: DeploymentVersion, prepared: Prepared, cancel: threading.Event | None = None, niceness: int | None = None
    ) -> Built | Rejected:
        return self.conclude(version, self.verify(version, prepared, cancel, niceness))

    def verify(
        self, version: DeploymentVersion, prepared: Prepared, cancel: threading.Event | None = None, niceness: int | None = None
    ) -> Verified | Refused:
        """Read and check the bundle and write its canonical release into a temporary file;
        nothing is stored yet (so it may run before the version has its number)."""
        log = self._log(version)
        out = tempfile.TemporaryFile(prefix="miosa-release-")  # noqa: SIM115 - handed on: ``Verified`` closes it
        try:
            outcome = self._read_into(out, version, prepared, log, cancel, niceness)
        except BaseException:
            out.close()
            raise
        if isinstance(outcome, Refused):
            out.close()
            return outcome
        return Verified(outcome, out, log)

    def _read_into(
        self,
        out: IO[bytes],
        version: DeploymentVersion,
        prepared: Prepared,
        log: BuildLog,
        cancel: threading.Event | None,
        niceness: int | None,
    ) -> IngestResult | Refused:
        artifact = version.spec.artifact
        assert artifact is not None, "the CRD requires an artifact for static versions"
        try:
            with self.store.open_read(prepared.source) as source:
                return self.ingest(
                    source,
                    out,
                    expected_sha256=artifact.sha256,
                    entrypoint=artifact.entrypoint,
                    limits=self.config.limits,
                    budget=self._budget(niceness),
                    log=log.line,
                    cancel=cancel,
                    tenant=version.metadata.namespace,
                    usage=lambda used: log.line(
                        f"ingestion worker: {used.cpu_seconds:.2f} s CPU, peak {human(used.peak_rss)} resident"
                    ),
                )
        except BundleRejected as rejected:
            return Refused(Reason(rejected.reason), rejected.message, log)
        except ArtifactNotFound:  # deleted between HEAD and GET: look again from the start
            raise StoreWait(
                Health.reconciling(Reason.ARTIFACT_PENDING, f"{prepared.source} disappeared; looking again")
            ) from None
        except TransientStoreError as exc:
            raise store_wait(exc, f"reading {prepared.source}") from exc
        except StoreError as exc:
            return Refused(Reason.ARTIFACT_UNREADABLE, f"cannot read {prepared.source}: {exc}", log)

    def conclude(self, version: DeploymentVersion, verified: Verified | Refused) -> Built | Rejected:
        """Store what ``verify`` decided under the version's release prefix (it needs the
        version's number and ids): the release and the build log, or the log of the refusal."""
        if isinstance(verified, Refused):
            return self.reject(version, verified.reason, verified.message, verified.log)
        result, log = verified.result, verified.log
        canonical_uri = join_uri(self.release_prefix(version), "dist.tar.zst")
        with verified.release as out:
            out.seek(0)
            stored_sha = self._store_canonical(canonical_uri, out, result.canonical_bytes, result.canonical_sha256, log)
        log.line(f"ready: {result.manifest.files} files, {result.manifest.total_bytes} bytes, release {canonical_uri}")
        log_uri = self._write_log(version, log)
        return Built(_ready_fields(result, canonical_uri, stored_sha, log_uri))

    def reject(self, version: DeploymentVersion, reason: Reason, message: str, log: BuildLog | None = None) -> Rejected:
        log = log or self._log(version)
        log.line(f"FAILED {reason}: {message}")
        return Rejected(Failure(reason, message), self._write_log(version, log))

    # ------------------------------------------------------------------ pieces
    def _log(self, version: DeploymentVersion) -> BuildLog:
        log = BuildLog(clock=self.clock)
        artifact = version.spec.artifact
        log.line(f"version {version.metadata.namespace}/{version.metadata.name} ({version.status.id})")
        if artifact is not None:
            log.line(f"source {artifact.uri} expecting sha256 {artifact.sha256}")
        return log

    def _budget(self, niceness: int | None) -> Budget:
        budget = self.config.budget
        return budget if niceness is None else replace(budget, niceness=niceness)

    def _store_canonical(self, uri: str, data: Any, size: int, sha256: str, log: BuildLog) -> str:
        """Write the release once; if an earlier attempt already did, keep it and use its hash."""
        try:
            if self.store.put_if_absent(uri, data, size=size, content_type="application/zstd"):
                log.line(f"stored canonical release {uri} ({size} bytes, sha256 {sha256})")
                return sha256
            existing = self._hash_object(uri)
        except TransientStoreError as exc:
            raise store_wait(exc, f"storing {uri}") from exc
        except StoreError as exc:  # the releases location is the operator's: a person must fix it
            raise StoreWait(Health.stalled(Reason.STORE_ACCESS_DENIED, f"storing {uri}: {exc}")) from exc
        note = "identical" if existing == sha256 else "kept as stored (it is never overwritten)"
        log.line(f"canonical release {uri} already stored by an earlier attempt: {note}")
        return existing

    def _hash_object(self, uri: str) -> str:
        digest = hashlib.sha256()
        with self.store.open_read(uri) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def _write_log(self, version: DeploymentVersion, log: BuildLog) -> str:
        uri = join_uri(self.release_prefix(version), "build.log")
        try:
            self.store.put_bytes_if_absent(uri, log.render(), content_type="text/plain; charset=utf-8")
        except TransientStoreError as exc:
            raise store_wait(exc, f"storing {uri}") from exc
        except StoreError as exc:
            raise StoreWait(Health.stalled(Reason.STORE_ACCESS_DENIED, f"storing {uri}: {exc}")) from exc
        return uri


def _ready_fields(result: IngestResult, canonical_uri: str, sha256: str, log_uri: str) -> Obj:
    return {
        "artifactUri": canonical_uri,
        "artifactSha256": sha256,
        "artifactManifest": {
            "files": result.manifest.files,
            "totalBytes": result.manifest.total_bytes,
            "entrypoint": result.manifest.entrypoint,
        },
        "buildLogUri": log_uri,
    }
