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
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

UNSET = "unset"


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
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_uid: dict[str, Facts] = {}
        self._uid_by_name: dict[tuple[str, str], str] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event (``None`` for the initial listing, as kopf passes it)."""
        metadata = body.get("metadata") or {}
        uid = metadata.get("uid")
        if not uid:
            return
        key = (metadata.get("namespace") or "", metadata.get("name") or "")
        with self._lock:
            if event_type == "DELETED":
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
