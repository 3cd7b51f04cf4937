"""The baseline: a plain Python script (no kopf) doing only the unavoidable work for a version.

Per version: GET it; PATCH status ``created`` (id, tenant, condition); PATCH ``building``;
stream the bundle from S3 through ``ingest_bundle`` (sha256, member checks, manifest,
canonical zstd tar into a temp file, like the operator); PUT the canonical release and the
build log (``If-None-Match: *``, no HEAD first); PATCH ``ready`` with the artifact fields.
Three status PATCHes: the operator's minimum.  What it leaves out on purpose is what the
operator does on top: version numbers (a compare-and-swap on the Deployment's status and
the release of the claim), label mirroring, events, kopf's own bookkeeping (finalizer-free
progress and last-handled annotations), and the framework's event loop and thread hops.
"""

from __future__ import annotations

import tempfile
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from miosa_operator.api import meta
from miosa_operator.domain.ids import new_deployment_id, new_version_id
from miosa_operator.ingest.buildlog import BuildLog
from miosa_operator.ingest.bundle import ingest_bundle
from miosa_operator.ingest.limits import IngestLimits
from miosa_operator.kube.client import Kube
from miosa_operator.kube.events import KubeEvents

GROUP, VERSION, PLURAL = "deploy.miosa.io", "v1alpha1", "deploymentversions"
MERGE = "application/merge-patch+json"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(status: str, reason: str, message: str, generation: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": _now(),
        }
    ]


class Baseline:
    def __init__(self, api_client: client.ApiClient, s3: Any, releases_bucket: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.s3 = s3
        self.bucket = releases_bucket
        self.limits = IngestLimits()
        self._dep_ids: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _patch_status(self, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, PLURAL, name, {"status": status}, _content_type=MERGE
        )

    def _dep_id(self, ns: str, dep: str) -> str:
        with self._lock:
            return self._dep_ids.setdefault((ns, dep), new_deployment_id())

    # What a subclass adds to the writes (``ContractFloor``); nothing here.
    def _created(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _building(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _ready(self, ns: str, body: dict[str, Any]) -> None:
        return None

    def process(self, ns: str, name: str) -> str:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        spec, gen = body["spec"], body["metadata"].get("generation", 1)
        ver_id = new_version_id()
        self._patch_status(
            ns,
            name,
            {
                "id": ver_id,
                "tenantId": ns,
                "state": "created",
                "observedGeneration": gen,
                "conditions": _condition("False", "Pending", "waiting", gen),
                **self._created(ns, body),
            },
        )
        building = {"state": "building", "conditions": _condition("False", "Building", "verifying", gen)}
        self._patch_status(ns, name, {**building, **self._building(ns, body)})
        artifact = spec["artifact"]
        bucket, _, key = artifact["uri"].removeprefix("s3://").partition("/")
        prefix = f"{ns}/{self._dep_id(ns, spec['deploymentRef']['name'])}/{ver_id}"
        log = BuildLog()
        log.line(f"source {artifact['uri']} expecting sha256 {artifact['sha256']}")
        with tempfile.TemporaryFile(prefix="mb-baseline-") as out:
            source = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            result = ingest_bundle(source, out, expected_sha256=artifact["sha256"], limits=self.limits, log=log.line)
            out.seek(0)
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{prefix}/dist.tar.zst",
                Body=out,
                ContentLength=result.canonical_bytes,
                ContentType="application/zstd",
                IfNoneMatch="*",
            )
        self.s3.put_object(
            Bucket=self.bucket,
            Key=f"{prefix}/build.log",
            Body=log.render(),
            ContentType="text/plain; charset=utf-8",
            IfNoneMatch="*",
        )
        self._patch_status(
            ns,
            name,
            {
                "state": "ready",
                "readyAt": _now(),
                "artifactUri": f"s3://{self.bucket}/{prefix}/dist.tar.zst",
                "artifactSha256": result.canonical_sha256,
                "artifactManifest": {
                    "files": result.manifest.files,
                    "totalBytes": result.manifest.total_bytes,
                    "entrypoint": result.manifest.entrypoint,
                },
                "buildLogUri": f"s3://{self.bucket}/{prefix}/build.log",
                "conditions": _condition("True", "Ready", "artifact verified and stored; promotable", gen),
            },
        )
        self._ready(ns, body)
        return "ready"


class ContractFloor(Baseline):
    """The baseline plus the least the product contract adds to a version, each done the
    cheapest way: a lower bound for any implementation of the contract on this machine, which
    says how close to the baseline an operator can come at all.

    On top of the baseline's work: a gapless number (a GET of the Deployment, the claim
    written on the version with ``created``, a compare-and-swap on the Deployment's status
    that also drops the claims recorded before it, as the operator's batched release does, the
    number written with ``building``), the labels the contract mirrors (one metadata PATCH,
    number included) and one Event.  Left out, though the operator does them: the LIST that
    keeps numbers in creation order, the crash-loop guard, a process boundary around the
    bundle, kopf, and rewriting the version's claim when the compare-and-swap loses.
    """

    def __init__(self, api_client: client.ApiClient, s3: Any, releases_bucket: str) -> None:
        super().__init__(api_client, s3, releases_bucket)
        self.events = KubeEvents(Kube(api_client))  # the operator's own Event, posted the same way
        self._recorded: dict[tuple[str, str], set[str]] = {}
        self._numbers = threading.local()

    def _created(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        dep = body["spec"]["deploymentRef"]["name"]
        self._numbers.deployment = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "deployments", dep)
        last = (self._numbers.deployment.get("status") or {}).get("lastVersionNumber") or 0
        return {"numberClaim": {"number": last + 1, "deploymentUid": self._numbers.deployment["metadata"]["uid"]}}

    def _building(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        dep, uid = body["spec"]["deploymentRef"]["name"], body["metadata"]["uid"]
        deployment = self._numbers.deployment
        while True:
            status = deployment.get("status") or {}
            number = (status.get("lastVersionNumber") or 0) + 1
            pending = status.get("pendingNumbers") or {}
            with self._lock:
                riding = {u: None for u in self._recorded.get((ns, dep), set()) if u in pending}
            patch = {
                "metadata": {"resourceVersion": deployment["metadata"]["resourceVersion"]},
                "status": {"lastVersionNumber": number, "pendingNumbers": {**riding, uid: number}},
            }
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, "deployments", dep, patch, _content_type=MERGE
                )
                break
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
                deployment = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "deployments", dep)
        with self._lock:
            self._recorded.setdefault((ns, dep), set()).difference_update(riding)
        self._numbers.number = number
        return {"versionNumber": number, "deploymentId": self._dep_id(ns, dep), "numberClaim": None}

    def _ready(self, ns: str, body: dict[str, Any]) -> None:
        name, uid, dep = body["metadata"]["name"], body["metadata"]["uid"], body["spec"]["deploymentRef"]["name"]
        labels = {meta.LABEL_DEPLOYMENT: dep, meta.LABEL_KIND: body["spec"]["kind"]}
        labels[meta.LABEL_VERSION_NUMBER] = str(self._numbers.number)
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, {"metadata": {"labels": labels}}, _content_type=MERGE
        )
        self.events.normal(body, "Ready", "version is ready to be promoted")
        with self._lock:
            self._recorded.setdefault((ns, dep), set()).add(uid)
