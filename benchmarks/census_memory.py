"""The census's memory for 10,000 settled versions (issue 14's RSS target), no cluster needed.

``python -m benchmarks.census_memory [--versions N]`` seeds a census with N settled versions
shaped like benchmark 5's fleet (50 Deployments x 200 versions in one namespace: ids,
numbers, labels, attribution, managedFields, every 50th failed, five archived per
Deployment), the way the operator does at startup (``handlers.seed_census``): pages of 500,
each page's JSON bytes parsed whole (``ClusterApi.list_pages``), then the page dropped.

Each variant runs in a fresh process (RSS and the allocator's state are per process):

* ``parse only``: the pages are parsed and nothing is kept (what listing alone leaves behind);
* ``before``: the census as it was (a ``Facts`` per version, kept inline below as the baseline);
* ``after``: ``observability.census.VersionCensus`` (settled versions as one int each,
  rebuilt after the listing and followed by ``malloc_trim``: what ``seed`` does now);
* ``parse only`` and ``before`` ``+ malloc_trim``: glibc's ``malloc_trim(0)`` after seeding.

Printed per variant: RSS growth from just before the seed to after it (``VmRSS``; MB = 10⁶
bytes) and, in a separate run under ``tracemalloc``, the bytes still allocated (what the
census holds) and the peak during the seed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE = 500
DEPLOYMENTS = 50
NAMESPACE = "mb-op-fleet-4f2a9c"
GROUP = "deploy.miosa.io"


# ------------------------------------------------------------------------ the fleet's bodies


def _ulid(seed: int) -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    number = int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:16], "big")
    return "".join(alphabet[(number >> shift) & 31] for shift in range(125, -1, -5))


def version_body(index: int, per_deployment: int) -> dict[str, Any]:
    d, n = divmod(index, per_deployment)
    n += 1
    name, dep = f"fleet-{d:02d}-v{n:04d}", f"fleet-{d:02d}"
    ver_id, dep_id = f"ver_{_ulid(index)}", f"dep_{_ulid(-d - 1)}"
    digest = hashlib.sha256(name.encode()).hexdigest()
    when = f"2025-0{1 + n % 9}-{10 + n % 18}T{n % 24:02d}:{n % 60:02d}:00Z"
    state = "failed" if n % 50 == 25 else "archived" if per_deployment - 6 < n < per_deployment else "ready"
    prefix = f"s3://miosa-releases/{NAMESPACE}/{dep_id}/{ver_id}"
    status: dict[str, Any] = {
        "id": ver_id, "tenantId": NAMESPACE, "deploymentId": dep_id, "versionNumber": n, "state": state,
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True" if state != "failed" else "False",
                        "reason": "Ready" if state != "failed" else "ChecksumMismatch",
                        "message": "fixture: ready", "observedGeneration": 1, "lastTransitionTime": when}],
    }  # fmt: skip
    if state != "failed":
        status |= {"readyAt": when, "artifactUri": f"{prefix}/dist.tar.zst", "artifactSha256": digest,
                   "buildLogUri": f"{prefix}/build.log",
                   "artifactManifest": {"files": 49, "totalBytes": 1_745_509, "entrypoint": "index.html"}}  # fmt: skip
    if state == "archived":
        status |= {"promotedAt": when, "archivedAt": when}
    fields_status = {f"f:{key}": {} for key in status}
    managed = [
        {"manager": "OpenAPI-Generator", "operation": "Update", "apiVersion": f"{GROUP}/v1alpha1", "time": when,
         "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {f"f:{GROUP}/{k}": {} for k in
         ("deployment", "kind", "created-by", "external-workspace-id", "external-user-id", "external-project-id",
          "version-number")}}, "f:spec": {".": {}, "f:artifact": {".": {}, "f:sha256": {}, "f:uri": {}},
          "f:attribution": {".": {}, "f:createdBy": {}, "f:externalProjectId": {}, "f:externalUserId": {},
          "f:externalWorkspaceId": {}}, "f:deploymentRef": {".": {}, "f:name": {}}, "f:kind": {}}}},
        {"manager": "OpenAPI-Generator", "operation": "Update", "apiVersion": f"{GROUP}/v1alpha1", "time": when,
         "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {".": {}, **fields_status}}, "subresource": "status"},
    ]  # fmt: skip
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "DeploymentVersion",
        "metadata": {
            "name": name, "namespace": NAMESPACE, "uid": str(uuid.UUID(int=index * 0x9E3779B97F4A7C15 % (1 << 128))),
            "resourceVersion": str(100_000 + index * 5), "generation": 1, "creationTimestamp": when,
            "labels": {f"{GROUP}/deployment": dep, f"{GROUP}/kind": "static", f"{GROUP}/created-by": "ci-bot",
                       f"{GROUP}/external-workspace-id": f"ws-{n % 4}", f"{GROUP}/external-user-id": f"user-{n % 10}",
                       f"{GROUP}/external-project-id": f"proj-{d:02d}", f"{GROUP}/version-number": str(n)},
            "managedFields": managed,
        },
        "spec": {"deploymentRef": {"name": dep}, "kind": "static",
                 "artifact": {"uri": f"s3://miosa-uploads/bench/fleet/{name}.tar.zst", "sha256": digest},
                 "attribution": {"createdBy": "ci-bot", "externalWorkspaceId": f"ws-{n % 4}",
                                 "externalUserId": f"user-{n % 10}", "externalProjectId": f"proj-{d:02d}"}},
        "status": status,
    }  # fmt: skip


def write_pages(path: Path, versions: int) -> list[tuple[int, int]]:
    """The LIST responses as bytes in one file; (offset, length) of each page."""
    spans, offset = [], 0
    per_deployment = max(1, versions // DEPLOYMENTS)
    with path.open("wb") as out:
        for start in range(0, versions, PAGE):
            items = [version_body(i, per_deployment) for i in range(start, min(versions, start + PAGE))]
            more = start + PAGE < versions
            data = json.dumps({"kind": "DeploymentVersionList", "metadata": {"continue": "x" * 40 if more else ""},
                               "items": items}).encode()  # fmt: skip
            out.write(data)
            spans.append((offset, len(data)))
            offset += len(data)
    return spans


def list_pages(path: Path, spans: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
    """As ``ClusterApi.list_pages``: one response's bytes parsed whole, its items yielded."""
    with path.open("rb") as source:
        for offset, length in spans:
            source.seek(offset)
            page = json.loads(source.read(length))
            yield from page.get("items", [])


# ------------------------------------------------------------------------ the census before


@dataclass(frozen=True)
class _Facts:
    namespace: str
    name: str
    kind: str
    state: str
    id: str | None
    since: float
    revision: int = 0


class CensusBefore:
    """``observability.census.VersionCensus`` before the compact form (commit a45de5e)."""

    def __init__(self, clock: Callable[[], float] = time.time, owns: Callable[[str], bool] = lambda uid: True) -> None:
        self._clock, self._owns = clock, owns
        self._lock = threading.Lock()
        self._by_uid: dict[str, _Facts] = {}
        self._uid_by_name: dict[tuple[str, str], str] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid or not self._owns(uid):
            return
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        with self._lock:
            status = body.get("status") or {}
            state = status.get("state") or "unset"
            old = self._by_uid.get(uid)
            revision = int(metadata.get("resourceVersion") or 0)
            if old is not None and revision and revision < old.revision:
                return
            since = old.since if old is not None and old.state == state else self._clock()
            kind = (body.get("spec") or {}).get("kind") or "unset"
            self._by_uid[uid] = _Facts(key[0], key[1], kind, state, status.get("id"), since, revision)
            self._uid_by_name[key] = uid

    def seed(self, bodies: Iterable[Mapping[str, Any]]) -> int:
        seen = 0
        for body in bodies:
            uid = (body.get("metadata") or {}).get("uid")
            with self._lock:
                known = uid in self._by_uid
            if uid and not known:
                self.observe(None, body)
            seen += 1
        return seen

    def counts(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter((f.state, f.kind) for f in self._by_uid.values())


class ParseOnly:
    def seed(self, bodies: Iterable[Mapping[str, Any]]) -> int:
        return sum(1 for _ in bodies)

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter()


# ------------------------------------------------------------------------ one variant, in a child


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _census(variant: str) -> Any:
    if variant == "after":
        from miosa_operator.observability.census import VersionCensus

        return VersionCensus()
    return CensusBefore() if variant == "before" else ParseOnly()


def child(variant: str, path: Path, spans: list[tuple[int, int]], trim: bool, traced: bool) -> dict[str, Any]:
    census = _census(variant)
    gc.collect()
    if traced:
        tracemalloc.start()
    before = _rss_bytes()
    seen = census.seed(list_pages(path, spans))
    gc.collect()
    if trim:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    result: dict[str, Any] = {"seen": seen, "rss": _rss_bytes() - before, "counts": sum(census.counts().values())}
    if traced:
        result["held"], result["peak"] = tracemalloc.get_traced_memory()
    return result


def run_variant(variant: str, path: Path, spans: list[tuple[int, int]], trim: bool, traced: bool) -> dict[str, Any]:
    args = json.dumps({"variant": variant, "path": str(path), "spans": spans, "trim": trim, "traced": traced})
    out = subprocess.run([sys.executable, "-m", "benchmarks.census_memory", "--child", args],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        spans = [tuple(span) for span in spec["spans"]]
        print(json.dumps(child(spec["variant"], Path(spec["path"]), spans, spec["trim"], spec["traced"])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pages.json"
        spans = write_pages(path, args.versions)
        size = sum(length for _, length in spans)
        print(f"{args.versions} settled versions, {len(spans)} pages of {PAGE}, {size / args.versions:,.0f} B of JSON each")
        print(f"{'variant':<24} {'RSS growth':>11} {'per version':>12} {'held (traced)':>14} {'peak (traced)':>14}")
        for variant in ("parse only", "before", "after"):
            for trim in (False, True) if variant != "after" else (False,):
                key = variant.split()[0]
                rss = run_variant(key, path, spans, trim, traced=False)
                traced = run_variant(key, path, spans, trim, traced=True)
                assert rss["seen"] == args.versions and rss["counts"] in (0, args.versions), rss
                label = variant + (" + malloc_trim" if trim else "")
                print(
                    f"{label:<24} {rss['rss'] / 1e6:>8.1f} MB {rss['rss'] / args.versions:>9,.0f} B "
                    f"{traced['held'] / 1e6:>11.2f} MB {traced['peak'] / 1e6:>11.1f} MB"
                )


if __name__ == "__main__":
    main()
