"""Building a static version: verify the uploaded bundle and store its canonical release.

The bundle is streamed once through ``ingest_bundle`` into a temporary file; only after it
verified is the canonical ``dist.tar.zst`` written, with ``put_if_absent`` so a retry after
a crash never writes a different object and an existing one is never overwritten (the
ingestion is deterministic, so a retry would produce the same bytes anyway).  A
human-readable, timestamped ``build.log`` is written next to it, for failures too.
Nothing is ever written outside ``<releases>/<tenant>/<dep id>/<ver id>/``.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..api.conditions import Reason
from ..api.models import DeploymentVersion
from ..ingest.buildlog import BuildLog
from ..ingest.bundle import BundleRejected, IngestResult, ingest_bundle
from ..settings import Settings
from ..store.base import ArtifactNotFound, ArtifactStore, StoreError, TransientStoreError
from ..store.router import join_uri
from .common import Clock, Failure, Obj, Retry

# A bundle that is not in the store yet may still be uploading (GitOps applies objects in
# any order); after this long, "not found" is a decision, not a wait.
MISSING_ARTIFACT_GRACE = timedelta(minutes=2)


@dataclass(frozen=True)
class Built:
    """Status fields of a verified, stored release."""

    fields: Obj


@dataclass(frozen=True)
class Rejected:
    failure: Failure
    build_log_uri: str | None


class StaticBuild:
    def __init__(self, store: ArtifactStore, config: Settings, clock: Clock) -> None:
        self.store, self.config, self.clock = store, config, clock

    def release_prefix(self, version: DeploymentVersion) -> str:
        status = version.status
        assert status.deployment_id and status.id
        return join_uri(self.config.releases_uri, version.metadata.namespace, status.deployment_id, status.id)

    def run(self, version: DeploymentVersion) -> Built | Rejected:
        artifact = version.spec.artifact
        assert artifact is not None, "the CRD requires an artifact for static versions"
        prefix = self.release_prefix(version)
        canonical_uri, log_uri = join_uri(prefix, "dist.tar.zst"), join_uri(prefix, "build.log")
        log = BuildLog(clock=self.clock)
        log.line(f"version {version.metadata.namespace}/{version.metadata.name} ({version.status.id})")
        log.line(f"source {artifact.uri} expecting sha256 {artifact.sha256}")

        def reject(reason: Reason, message: str) -> Rejected:
            log.line(f"FAILED {reason}: {message}")
            self._write_log(log_uri, log)
            return Rejected(Failure(reason, message), log_uri)

        if not self.config.source_allowed(artifact.uri, version.metadata.namespace):
            return reject(Reason.SOURCE_NOT_ALLOWED, f"{artifact.uri} is not an allowed source for namespace {version.metadata.namespace!r}")
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
                return reject(Reason(rejected.reason), rejected.message)
            except ArtifactNotFound as exc:
                created = version.metadata.creation_timestamp or self.clock()
                if self.clock() - created < MISSING_ARTIFACT_GRACE:
                    raise Retry(f"artifact {artifact.uri} not found yet", delay=5.0) from exc
                return reject(Reason.ARTIFACT_NOT_FOUND, f"artifact {artifact.uri} does not exist in the store")
            except TransientStoreError as exc:
                raise Retry(f"artifact store: {exc}", delay=5.0, planned=False) from exc
            except StoreError as exc:  # a URI this operator may not or cannot read: the tenant's mistake
                return reject(Reason.ARTIFACT_UNREADABLE, f"cannot read {artifact.uri}: {exc}")
            out.seek(0)
            stored_sha = self._store_canonical(canonical_uri, out, result.canonical_bytes, result.canonical_sha256, log)
        log.line(f"ready: {result.manifest.files} files, {result.manifest.total_bytes} bytes, release {canonical_uri}")
        self._write_log(log_uri, log)
        return Built(_ready_fields(result, canonical_uri, stored_sha, log_uri))

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

    def _write_log(self, uri: str, log: BuildLog) -> None:
        try:
            self.store.put_bytes_if_absent(uri, log.render(), content_type="text/plain; charset=utf-8")
        except TransientStoreError as exc:
            raise Retry(f"artifact store: {exc}", delay=5.0, planned=False) from exc


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
