"""coordination.k8s.io Leases: one process at a time for a shard, and for the singletons.

Design decisions:

* **client-go's rules, a small class.** A Lease is held by the process named in
  ``holderIdentity`` for as long as it keeps renewing it; another process may take it once it
  has seen no change for ``leaseDurationSeconds`` (measured on its own monotonic clock, so
  clock skew between nodes does not matter).  Every write carries the resourceVersion it
  read, so two candidates never both win.  The official client's ``leaderelection`` module
  only has a ConfigMap lock, reads the global configuration and calls ``sys.exit`` on bad
  settings, hence this class (~100 lines, used by ``shards``).
* **Giving up is explicit.** ``release`` empties the holder on a graceful stop, so the next
  process need not wait a full duration; a process that cannot renew in time must assume it
  lost the Lease and stop acting (the callers do).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Lease:
    api: Any  # kubernetes.client.CoordinationV1Api
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    labels: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _seen: tuple[str, float] | None = None  # (resourceVersion, when we first saw it)
    held: bool = False

    @classmethod
    def in_cluster(cls, api_client: Any, namespace: str, name: str, identity: str, duration: float, **kw: Any) -> Lease:
        return cls(client.CoordinationV1Api(api_client), namespace, name, identity, duration, **kw)

    def try_acquire(self) -> bool:
        """Acquire or renew; True while this process holds the Lease."""
        try:
            current = self._read()
            if current is None:
                self._create()
            elif not self._free_for_me(current):
                self.held = False
                return False
            else:
                self._write(current)
        except ApiException as exc:
            if exc.status not in (409, 404):
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, exc.status, exc.reason)
            self.held = False
            return False
        self.held = True
        return True

    def release(self) -> None:
        """Give the Lease up (graceful stop): the next candidate need not wait it out."""
        if not self.held:
            return
        self.held = False
        try:
            current = self._read()
            if current and (current.get("spec") or {}).get("holderIdentity") == self.identity:
                current["spec"]["holderIdentity"] = None
                self.api.replace_namespaced_lease(self.name, self.namespace, current, _request_timeout=5)
        except (ApiException, OSError) as exc:
            log.warning("lease %s/%s not released (it expires by itself): %s", self.namespace, self.name, exc)

    # ------------------------------------------------------------------ plumbing
    def _read(self) -> Obj | None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: Obj = self.api.api_client.sanitize_for_serialization(lease)
        return body

    def _free_for_me(self, current: Obj) -> bool:
        holder = (current.get("spec") or {}).get("holderIdentity")
        if holder in (None, "", self.identity):
            return True
        return self.expired(current)

    def expired(self, current: Obj) -> bool:
        """Unchanged for a whole duration, as far as this process has watched it."""
        version = current["metadata"]["resourceVersion"]
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, self.clock())
            return False
        seconds = (current.get("spec") or {}).get("leaseDurationSeconds") or self.duration
        return self.clock() - self._seen[1] >= seconds

    def _spec(self, acquired: str | None) -> Obj:
        now = _now()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquired or now,
            "renewTime": now,
        }

    def _create(self) -> None:
        body = {"metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels}, "spec": self._spec(None)}
        self.api.create_namespaced_lease(self.namespace, body, _request_timeout=10)

    def _write(self, current: Obj) -> None:
        spec = current.get("spec") or {}
        mine = spec.get("holderIdentity") == self.identity
        current["spec"] = {**spec, **self._spec(spec.get("acquireTime") if mine else None)}
        if not mine:
            current["spec"]["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
        current["metadata"]["labels"] = {**(current["metadata"].get("labels") or {}), **self.labels}
        # replace = compare-and-swap on the resourceVersion we read: 409 if someone else wrote.
        self.api.replace_namespaced_lease(self.name, self.namespace, current, _request_timeout=10)
