"""How many ingestions run at once, and whose: a bounded pool shared fairly between tenants.

Each ingestion is a worker process of up to ``MIOSA_INGEST_MEMORY``; the operator's memory
bound is ``base + slots x budget`` only if the number of slots is bounded apart from
everything else (kopf's worker threads also serve Deployments and waits).

Design decisions:

* **Acquire without blocking.** A version that finds no free slot is not parked on a thread:
  the controller asks again later (a planned ``Retry``), so queued versions hold no kopf
  worker and the queue costs one small record per version.
* **Fair between tenants, FIFO within one.** When a slot is free it goes to the tenant with
  the fewest ingestions running (ties: the longest-waiting head); a tenant never runs more
  than ``per_tenant`` at once, nor more than ``tenant_bytes`` of bundles (one bundle always
  may run, however large), so one tenant's flood cannot take every slot or starve another.
  Each tenant's waiters are served in the order they first asked.
* **Bounded queue.** At most ``tenant_pending`` versions of a tenant are queued or running;
  further ones are told to come back later without being recorded (their order is then
  not kept: a tenant that floods loses FIFO among its excess, nobody else notices).
* **Forgetful.** A waiter that stops asking (its version was deleted, the operator moved on)
  is dropped after ``forget_after`` seconds, so it cannot hold the head of a queue.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Slot:
    """A granted ingestion slot; give it back with ``IngestionSlots.release``."""

    tenant: str
    key: str
    size: int


@dataclass(frozen=True)
class Queued:
    """Not now: ``ahead`` of the tenant's own waiters come first (``None``: not even queued,
    the tenant is full)."""

    ahead: int | None
    message: str


@dataclass
class _Waiter:
    size: int
    since: float
    seen: float


@dataclass
class _Tenant:
    waiting: OrderedDict[str, _Waiter] = field(default_factory=OrderedDict)
    running: dict[str, int] = field(default_factory=dict)

    @property
    def running_bytes(self) -> int:
        return sum(self.running.values())


class IngestionSlots:
    def __init__(
        self,
        total: int,
        per_tenant: int,
        tenant_bytes: int,
        tenant_pending: int,
        clock: Callable[[], float] = time.monotonic,
        forget_after: float = 60.0,
    ) -> None:
        self.total, self.per_tenant, self.tenant_bytes, self.tenant_pending = total, per_tenant, tenant_bytes, tenant_pending
        self._clock = clock
        self._forget_after = forget_after
        self._tenants: dict[str, _Tenant] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str, key: str, size: int) -> Slot | Queued:
        with self._lock:
            now = self._clock()
            self._forget_stale(now)
            record = self._tenants.setdefault(tenant, _Tenant())
            if key in record.running:  # asked again while running (a retried handler): still its slot
                return Slot(tenant, key, record.running[key])
            waiter = record.waiting.get(key)
            if waiter is None:
                if len(record.waiting) + len(record.running) >= self.tenant_pending:
                    return Queued(
                        None,
                        f"this namespace already has {self.tenant_pending} versions queued or ingesting "
                        "(MIOSA_TENANT_MAX_PENDING); this one asks again later",
                    )
                waiter = record.waiting[key] = _Waiter(size, now, now)
            waiter.seen, waiter.size = now, size
            if self._next() == (tenant, key):
                del record.waiting[key]
                record.running[key] = size
                return Slot(tenant, key, size)
            return self._queued(tenant, key)

    def release(self, slot: Slot) -> None:
        with self._lock:
            record = self._tenants.get(slot.tenant)
            if record is not None:
                record.running.pop(slot.key, None)
                if not record.running and not record.waiting:
                    del self._tenants[slot.tenant]

    def running(self) -> dict[str, int]:
        """Ingestions running per tenant (for tests and metrics)."""
        with self._lock:
            return {tenant: len(record.running) for tenant, record in self._tenants.items() if record.running}

    # ------------------------------------------------------------------ the policy
    def _next(self) -> tuple[str, str] | None:
        """The waiter that gets the next free slot, if a slot is free and someone may take it."""
        if sum(len(record.running) for record in self._tenants.values()) >= self.total:
            return None
        candidates = []
        for tenant, record in self._tenants.items():
            if not record.waiting or len(record.running) >= self.per_tenant:
                continue
            key, head = next(iter(record.waiting.items()))
            if record.running and record.running_bytes + head.size > self.tenant_bytes:
                continue
            candidates.append((len(record.running), head.since, tenant, key))
        return min(candidates)[2:] if candidates else None

    def _queued(self, tenant: str, key: str) -> Queued:
        """Says only what concerns this tenant: other tenants' load is none of its business."""
        record = self._tenants[tenant]
        mine = record.waiting[key]
        ahead = sum(1 for waiter in record.waiting.values() if waiter.since < mine.since)
        if len(record.running) >= self.per_tenant:
            why = f"this namespace runs {len(record.running)} ingestions already (MIOSA_TENANT_MAX_INGESTIONS)"
        elif record.running and record.running_bytes + mine.size > self.tenant_bytes:
            why = "this namespace's bundles in flight are at MIOSA_TENANT_MAX_BYTES_IN_FLIGHT"
        else:
            why = "every slot is in use (MIOSA_MAX_CONCURRENT_INGESTIONS)"
        return Queued(ahead, f"waiting for an ingestion slot: {why}; {ahead} of this namespace's versions ahead")

    def _forget_stale(self, now: float) -> None:
        for tenant in list(self._tenants):
            record = self._tenants[tenant]
            for key in [k for k, w in record.waiting.items() if now - w.seen > self._forget_after]:
                del record.waiting[key]
            if not record.running and not record.waiting:
                del self._tenants[tenant]
