"""A sharded operator: each shard once, the singletons once, nothing shared removed on exit.

With ``MIOSA_SHARDS`` = 1 (the default) nothing here runs: one process is its own shard and
its own singleton, as before.  With N > 1 every process is shard ``MIOSA_SHARD_INDEX``:

* **Its shard's Lease before it watches anything.** ``miosa-operator-shard-<i>`` is held by one
  process at a time, so a replacement pod (or a pod that was partitioned away and comes back)
  never handles a shard next to its old self.  The Lease carries the layout (N) in a label;
  a process waits while a Lease of another layout is alive, so when the shard count changes
  the old processes stop (and release, or expire) before the new ones start: ranges of
  different layouts overlap, their Lease names do not.
* **The singletons follow one more Lease**, ``miosa-operator-singletons``, which any shard may
  hold: the periodic collector, the offboarding sweep and the owner of the webhook
  configuration's caBundle run in the holder only, and move when it stops or dies.
* **Losing the shard Lease stops the process** (``on_lost``): a shard that cannot renew in
  time must assume someone else took over.  A graceful stop releases both Leases and deletes
  nothing else: releases, workloads, the webhook configuration and the other shards' Leases
  are shared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .kube.leases import Lease
from .sharding import Shard

log = logging.getLogger(__name__)

LEASE_PREFIX = "miosa-operator"
LAYOUT_LABEL = "deploy.miosa.io/shards"


class Singletons(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class _Observed:
    """Another process's Lease, as this process has seen it change (or not)."""

    version: str
    since: float


class Coordination:
    def __init__(
        self,
        api_client: Any,
        shard: Shard,
        namespace: str,
        identity: str,
        singletons: Singletons,
        on_lost: Callable[[], None],
        duration: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.shard, self.namespace, self.identity = shard, namespace, identity
        self.singletons, self.on_lost, self.duration, self.clock = singletons, on_lost, duration, clock
        layout = {LAYOUT_LABEL: str(shard.count)}
        self.shard_lease = Lease(self.api, namespace, f"{LEASE_PREFIX}-shard-{shard.index}", identity, duration, layout, clock)
        self.singleton_lease = Lease(self.api, namespace, f"{LEASE_PREFIX}-singletons", identity, duration, clock=clock)
        self.leading = False
        self._others: dict[str, _Observed] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ joining
    def join(self, poll: float = 1.0) -> None:
        """Block until this process holds its shard and no process of another layout is alive."""
        waiting_since = self.clock()
        said = False
        while not self._stop.is_set():
            if self.shard_lease.try_acquire():
                if self._other_layouts_gone():
                    log.info("%s: holding Lease %s/%s", self.shard, self.namespace, self.shard_lease.name)
                    return
                self.shard_lease.try_acquire()  # keep it while we wait
            if not said and self.clock() - waiting_since > poll * 3:
                log.warning(
                    "%s: waiting for Lease %s/%s or for the shards of another layout to stop",
                    self.shard,
                    self.namespace,
                    self.shard_lease.name,
                )
                said = True
            self._stop.wait(poll)

    def _other_layouts_gone(self) -> bool:
        try:
            leases = self.api.list_namespaced_lease(self.namespace, label_selector=LAYOUT_LABEL, _request_timeout=10)
        except ApiException as exc:
            log.warning("%s: cannot list the shard Leases: %s %s", self.shard, exc.status, exc.reason)
            return False
        alive = False
        for lease in leases.items:
            layout = (lease.metadata.labels or {}).get(LAYOUT_LABEL)
            if layout == str(self.shard.count) or not lease.spec.holder_identity:
                continue
            seen = self._others.get(lease.metadata.name)
            if seen is None or seen.version != lease.metadata.resource_version:
                self._others[lease.metadata.name] = _Observed(lease.metadata.resource_version, self.clock())
                alive = True
            elif self.clock() - seen.since < (lease.spec.lease_duration_seconds or self.duration):
                alive = True
        return not alive

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="miosa-leases", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.duration / 3
        last_renewal = self.clock()
        while not self._stop.wait(interval):
            if self.shard_lease.try_acquire():
                last_renewal = self.clock()
            elif self.clock() - last_renewal >= self.duration * 2 / 3:
                log.error(
                    "%s: Lease %s not renewed for %.0f s; stopping so that no other process handles this shard next to us",
                    self.shard,
                    self.shard_lease.name,
                    self.clock() - last_renewal,
                )
                self._lead(False)
                self.on_lost()
                return
            self._lead(self.singleton_lease.try_acquire())

    def _lead(self, holding: bool) -> None:
        if holding and not self.leading:
            log.info("%s: elected for the singletons (collector, offboarding sweeps, webhook caBundle)", self.shard)
            self.leading = True
            self.singletons.start()
        elif not holding and self.leading:
            log.warning("%s: no longer holding the singletons' Lease; stopping them", self.shard)
            self.leading = False
            self.singletons.stop()

    def stop(self) -> None:
        """Graceful: stop the singletons, give both Leases up; delete nothing else."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.duration)
        self._lead(False)
        self.singleton_lease.release()
        self.shard_lease.release()
