"""How many ingestions run at once, and whose: a bounded pool shared fairly between tenants.

Each ingestion is a worker process of up to ``MIOSA_INGEST_MEMORY``; the operator's memory
bound is ``base + slots x budget`` only if the number of slots is bounded apart from
everything else (kopf's worker threads also serve Deployments and waits).

Design decisions:

* **Acquire without blocking; wake instead of polling.** A version that finds no free slot
  is not parked on a thread. Its handler may ``subscribe``: it is called back (from the
  thread that released a slot) when its turn comes, so a queue of waiting versions costs
  no polling (no API calls, no kopf retries) and a freed slot is taken at once. A waiter
  that does not subscribe simply asks again later.
* **Fair between tenants, FIFO within one.** When a slot is free it goes to the tenant with
  the fewest ingestions running (ties: the longest-waiting head); a tenant never runs more
  than ``per_tenant`` at once, nor more than ``tenant_bytes`` of bundles (one bundle always
  may run, however large), so one tenant's flood cannot take every slot or starve another.
  Each tenant's waiters are served in the order they first asked.
* **Bounded queue.** At most ``tenant_pending`` versions of a tenant are queued or running;
  further ones are told to come back later without being recorded (their order is then
  not kept: a tenant that floods loses FIFO among its excess, nobody else notices).
* **Work-conserving.** With ``F`` slots free, the first ``F`` waiters in the fair order may
  each take one as soon as they ask (a waiter does not idle a slot while an earlier one has
  not asked again yet). Waiters ask again every few seconds; one that has not asked for
  ``absent_after`` seconds (its handler is delayed, its version was deleted) keeps its place
  but is skipped, so a free slot never idles behind it; after ``forget_after`` it is dropped.
  (Dropping alone would livelock: a waiter whose polls are further apart than the timeout
  would be re-queued at the back every time it asks.)
* **CPU priority by turn.** A tenant's first running ingestion runs at ``first_niceness``
  (``MIOSA_INGEST_NICENESS``, 0 by default: publishing is what users wait for, and the control
  loop, mostly asleep, still wins the CPU when it wakes); its further ones at 19, so a flood
  gets the CPU left over once every tenant's first ingestion and the control loop have had
  theirs. Niceness 10 for the first cost a 1 MiB version ~35 ms at p50 on a loaded machine
  (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_NICENESS = 0
EXTRA_NICENESS = 19


@dataclass(frozen=True)
class Slot:
    """A granted ingestion slot; give it back with ``IngestionSlots.release``."""

    tenant: str
    key: str
    size: int
    niceness: int = FIRST_NICENESS
    """CPU priority of the worker: the tenant's first running ingestion yields less."""


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
        absent_after: float = 10.0,
        forget_after: float = 600.0,
        first_niceness: int = FIRST_NICENESS,
    ) -> None:
        self.total, self.per_tenant, self.tenant_bytes, self.tenant_pending = total, per_tenant, tenant_bytes, tenant_pending
        self.first_niceness = first_niceness
        self._clock = clock
        self._absent_after = absent_after
        self._forget_after = forget_after
        self._tenants: dict[str, _Tenant] = {}
        self._subscribers: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str, key: str, size: int) -> Slot | Queued:
        with self._lock:
            now = self._clock()
            self._forget_stale(now)
            record = self._tenants.setdefault(tenant, _Tenant())
            if key in record.running:  # asked again while running (a retried handler): still its slot
                niceness = self.first_niceness if len(record.running) == 1 else EXTRA_NICENESS
                return Slot(tenant, key, record.running[key], niceness)
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
            if (tenant, key) in self._next_in_turn(now):
                del record.waiting[key]
                niceness = EXTRA_NICENESS if record.running else self.first_niceness
                record.running[key] = size
                return Slot(tenant, key, size, niceness)
            return self._queued(tenant, key)

    def release(self, slot: Slot) -> None:
        with self._lock:
            record = self._tenants.get(slot.tenant)
            if record is not None:
                record.running.pop(slot.key, None)
                if not record.running and not record.waiting:
                    del self._tenants[slot.tenant]
            now = self._clock()
            woken = []
            for tenant, key in self._next_in_turn(now):
                if key in self._subscribers:
                    woken.append(self._subscribers.pop(key))
                    self._tenants[tenant].waiting[key].seen = now  # it asks again right away
        for wake in woken:
            wake()

    def subscribe(self, key: str, wake: Callable[[], None]) -> bool:
        """Call ``wake`` (once, from another thread) when it is ``key``'s turn; True if it
        already is (then ``wake`` is not kept). A subscribed waiter counts as present."""
        with self._lock:
            if any(key == turn for _, turn in self._next_in_turn(self._clock())):
                return True
            self._subscribers[key] = wake
            return False

    def unsubscribe(self, key: str) -> None:
        with self._lock:
            self._subscribers.pop(key, None)

    def running(self) -> dict[str, int]:
        """Ingestions running per tenant (for tests and metrics)."""
        with self._lock:
            return {tenant: len(record.running) for tenant, record in self._tenants.items() if record.running}

    # ------------------------------------------------------------------ the policy
    def _next_in_turn(self, now: float) -> list[tuple[str, str]]:
        """The waiters that get the free slots, in order: the fair choice made once per free
        slot, as if each earlier choice had already taken its slot."""
        free = self.total - sum(len(record.running) for record in self._tenants.values())
        running = {tenant: len(record.running) for tenant, record in self._tenants.items()}
        in_flight = {tenant: record.running_bytes for tenant, record in self._tenants.items()}
        queues = {
            tenant: [(k, w) for k, w in record.waiting.items() if now - w.seen <= self._absent_after or k in self._subscribers]
            for tenant, record in self._tenants.items()
        }
        chosen: list[tuple[str, str]] = []
        for _ in range(max(free, 0)):
            candidates = []
            for tenant, queue in queues.items():
                if not queue or running[tenant] >= self.per_tenant:
                    continue
                key, head = queue[0]
                if running[tenant] and in_flight[tenant] + head.size > self.tenant_bytes:
                    continue
                candidates.append((running[tenant], head.since, tenant, key, head.size))
            if not candidates:
                break
            _, _, tenant, key, size = min(candidates)
            chosen.append((tenant, key))
            queues[tenant].pop(0)
            running[tenant] += 1
            in_flight[tenant] += size
        return chosen

    def _queued(self, tenant: str, key: str) -> Queued:
        """Says only what concerns this tenant: other tenants' load is none of its business."""
        record = self._tenants[tenant]
        mine = record.waiting[key]
        ahead = sum(1 for waiter in record.waiting.values() if waiter.since < mine.since)
        if len(record.running) >= self.per_tenant:
            why = f"this namespace runs {len(record.running)} ingestions already (MIOSA_TENANT_MAX_INGESTIONS)"
        elif record.running and record.running_bytes + mine.size > self.tenant_bytes:
            why = "this namespace's bundles in flight are at MIOSA_TENANT_MAX_BYTES_IN_FLIGHT"
        elif sum(len(other.running) for other in self._tenants.values()) >= self.total:
            why = "every slot is in use (MIOSA_MAX_CONCURRENT_INGESTIONS)"
        else:
            why = "a slot is free and goes to whoever's turn it is (fair share between namespaces)"
        # The count stays out of the message: the condition is written once, not per move.
        return Queued(ahead, f"waiting for an ingestion slot: {why}")

    def _forget_stale(self, now: float) -> None:
        for tenant in list(self._tenants):
            record = self._tenants[tenant]
            stale = [k for k, w in record.waiting.items() if now - w.seen > self._forget_after and k not in self._subscribers]
            for key in stale:
                del record.waiting[key]
            if not record.running and not record.waiting:
                del self._tenants[tenant]
