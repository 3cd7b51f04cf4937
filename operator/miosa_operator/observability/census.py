"""Every DeploymentVersion the operator sees, by state and kind, from kopf's watch stream.

The gauges ``miosa_versions{state,kind}`` and ``miosa_versions_oldest_seconds{state}`` are
computed when Prometheus scrapes, from this in-memory table, so a scrape costs no API call
however many versions exist.  The table is fed by a kopf event handler (every ADDED, MODIFIED
and DELETED the operator's watch receives) and holds a few small fields per version.

It also answers "what is the id of version ``ns/name``" for log lines about Deployments,
which name their versions but do not carry their ids.  The journal feeds it the operator's
own status writes as they happen; a watch event older than those (by resourceVersion) is
ignored.

``since`` is when the census first saw a version in its current state; after an operator
restart it is the restart, so "oldest in building" can only err on the young side.

The operator watches only versions in flight (``handlers.UNSETTLED_VERSIONS``): a version
that becomes ready, failed or archived leaves the watch with a DELETED event.  So a DELETED
of a version the census knows as settled means "no longer watched", not "gone": it stays
counted.  Settled versions from before the process started are counted by ``seed`` (a paged
LIST at startup); a settled version deleted later (a retention admin's purge) stays counted
until the operator restarts, and a deleted namespace's versions are dropped with it
(``forget_namespace``).

With N shards each process counts its own share (``owns``): the singletons' holder also
writes other shards' versions (archiving, collection), and those writes must not make it
count them too, or the shards' sums would count them twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

UNSET = "unset"
SETTLED = frozenset({"ready", "failed", "archived"})


@dataclass(frozen=True)
class Facts:
    namespace: str
    name: str
    kind: str
    state: str
    id: str | None
    since: float
    revision: int = 0


def _revision(raw: Any) -> int:
    """resourceVersion as a number when it is one (etcd's are; the contract says opaque)."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


class VersionCensus:
    def __init__(self, clock: Callable[[], float] = time.time, owns: Callable[[str], bool] = lambda uid: True) -> None:
        self._clock, self._owns = clock, owns
        self._lock = threading.Lock()
        self._by_uid: dict[str, Facts] = {}
        self._uid_by_name: dict[tuple[str, str], str] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event (``None`` for the initial listing, as kopf passes it)."""
        metadata = body.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid or not self._owns(uid):
            return
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        with self._lock:
            if event_type == "DELETED":
                known = self._by_uid.get(uid)
                if known is not None and known.state in SETTLED:
                    return  # it left the watch (it settled); it is not gone
                self._by_uid.pop(uid, None)
                if self._uid_by_name.get(key) == uid:
                    del self._uid_by_name[key]
                return
            status = body.get("status") or {}
            state = status.get("state") or UNSET
            old = self._by_uid.get(uid)
            revision = _revision(metadata.get("resourceVersion"))
            if old is not None and revision and revision < old.revision:
                return  # a watch event older than what the journal already recorded
            since = old.since if old is not None and old.state == state else self._clock()
            kind = (body.get("spec") or {}).get("kind") or UNSET
            self._by_uid[uid] = Facts(key[0], key[1], kind, state, status.get("id"), since, revision)
            self._uid_by_name[key] = uid

    def seed(self, bodies: Iterable[Mapping[str, Any]]) -> int:
        """Versions listed (not watched) at startup; anything the census already has wins."""
        seen = 0
        for body in bodies:
            uid = (body.get("metadata") or {}).get("uid")
            with self._lock:
                known = uid in self._by_uid
            if uid and not known:
                self.observe(None, body)
            seen += 1
        return seen

    def forget_namespace(self, namespace: str) -> None:
        with self._lock:
            for uid in [uid for uid, facts in self._by_uid.items() if facts.namespace == namespace]:
                facts = self._by_uid.pop(uid)
                self._uid_by_name.pop((facts.namespace, facts.name), None)

    def counts(self) -> Counter[tuple[str, str]]:
        """(state, kind) -> number of versions."""
        with self._lock:
            return Counter((f.state, f.kind) for f in self._by_uid.values())

    def oldest_seconds(self, state: str) -> float:
        """How long the version longest in ``state`` has been there (0 when none is)."""
        now = self._clock()
        with self._lock:
            since = [f.since for f in self._by_uid.values() if f.state == state]
        return max(0.0, now - min(since)) if since else 0.0

    def version_id(self, namespace: str, name: str) -> str | None:
        with self._lock:
            uid = self._uid_by_name.get((namespace, name))
            facts = self._by_uid.get(uid) if uid else None
            return facts.id if facts else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)
