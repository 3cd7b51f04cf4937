"""The ingestion slots: bounded, fair between tenants, FIFO within one, capped per tenant."""

from __future__ import annotations

from miosa_operator.controllers.ingestion_slots import IngestionSlots, Queued, Slot


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slots(
    total: int = 4, per_tenant: int = 2, tenant_bytes: int = 1000, tenant_pending: int = 50
) -> tuple[IngestionSlots, Clock]:
    clock = Clock()
    return IngestionSlots(total, per_tenant, tenant_bytes, tenant_pending, clock=clock, absent_after=10, forget_after=60), clock


def test_never_more_than_total_and_per_tenant() -> None:
    pool, _ = slots()
    granted = [pool.acquire(t, f"{t}-{i}", 1) for t in ("a", "b", "c") for i in range(3)]
    assert sum(isinstance(g, Slot) for g in granted) == 4
    assert all(count <= 2 for count in pool.running().values())


def test_a_flooding_tenant_cannot_take_every_slot() -> None:
    pool, clock = slots(total=4, per_tenant=2)
    flood = [pool.acquire("flood", f"f{i}", 1) for i in range(100)]
    assert sum(isinstance(g, Slot) for g in flood) == 2  # its share, not all four
    clock.now = 1
    assert isinstance(pool.acquire("quiet", "q1", 1), Slot)  # a free slot, another tenant: at once


def test_a_freed_slot_goes_to_the_tenant_running_fewer_even_if_it_asked_later() -> None:
    pool, clock = slots(total=4, per_tenant=3)
    flood = [pool.acquire("flood", f"f{i}", 1) for i in range(10)]  # f0-f2 run, f3... wait since t=0
    clock.now = 1
    assert isinstance(pool.acquire("quiet", "q0", 1), Slot)
    assert isinstance(pool.acquire("quiet", "q1", 1), Queued)  # waits since t=1, behind f3 in time
    pool.release(flood[0])  # type: ignore[arg-type]  # flood 2 running, quiet 1
    assert isinstance(pool.acquire("flood", "f3", 1), Queued)
    assert isinstance(pool.acquire("quiet", "q1", 1), Slot)


def test_fifo_within_a_tenant() -> None:
    pool, clock = slots(total=1, per_tenant=1)
    first = pool.acquire("a", "a0", 1)
    for i in range(1, 4):
        clock.now = i
        assert isinstance(pool.acquire("a", f"a{i}", 1), Queued)
    pool.release(first)  # type: ignore[arg-type]
    assert isinstance(pool.acquire("a", "a3", 1), Queued)
    assert isinstance(pool.acquire("a", "a2", 1), Queued)
    assert isinstance(pool.acquire("a", "a1", 1), Slot)


def test_bytes_in_flight_per_tenant_but_one_bundle_always_runs() -> None:
    pool, _ = slots(tenant_bytes=100)
    huge = pool.acquire("a", "huge", 500)
    assert isinstance(huge, Slot)  # alone, whatever its size
    assert isinstance(pool.acquire("a", "small", 10), Queued)
    assert isinstance(pool.acquire("b", "other", 500), Slot)  # another tenant's budget
    pool.release(huge)
    assert isinstance(pool.acquire("a", "small", 10), Slot)


def test_pending_cap_keeps_the_queue_small() -> None:
    pool, _ = slots(total=1, per_tenant=1, tenant_pending=3)
    results = [pool.acquire("a", f"a{i}", 1) for i in range(10)]
    assert isinstance(results[0], Slot)
    assert [r.ahead is not None for r in results[1:] if isinstance(r, Queued)] == [True, True] + [False] * 7
    assert "MIOSA_TENANT_MAX_PENDING" in results[-1].message  # type: ignore[union-attr]


def test_a_waiter_that_stops_asking_is_skipped_then_forgotten() -> None:
    pool, clock = slots(total=1, per_tenant=1)
    running = pool.acquire("a", "a0", 1)
    assert isinstance(pool.acquire("a", "gone", 1), Queued)  # then its version is deleted
    clock.now = 5
    assert isinstance(pool.acquire("a", "next", 1), Queued)
    pool.release(running)  # type: ignore[arg-type]
    assert isinstance(pool.acquire("a", "next", 1), Queued)  # "gone" asked 5 s ago: its turn
    clock.now = 12
    assert isinstance(pool.acquire("a", "next", 1), Slot)  # "gone" is absent: the slot does not idle
    clock.now = 70
    pool.acquire("b", "b0", 1)
    assert "gone" not in pool._tenants["a"].waiting  # forgotten


def test_a_waiter_polling_slowly_is_not_starved() -> None:
    """Polls further apart than the absence limit (a delayed handler) still get their turn."""
    pool, clock = slots(total=1, per_tenant=1)
    running = pool.acquire("a", "busy", 1)
    assert isinstance(pool.acquire("a", "slow", 1), Queued)
    for t in range(1, 5):
        clock.now = 30 * t
        assert isinstance(pool.acquire("a", "slow", 1), Queued)
    pool.release(running)  # type: ignore[arg-type]
    clock.now = 200
    assert isinstance(pool.acquire("a", "slow", 1), Slot)


def test_asking_again_while_running_keeps_the_slot() -> None:
    pool, _ = slots(total=1)
    first = pool.acquire("a", "a0", 1)
    assert pool.acquire("a", "a0", 1) == first
    pool.release(first)  # type: ignore[arg-type]
    assert pool.running() == {}


def test_messages_say_nothing_about_other_tenants() -> None:
    pool, _ = slots(total=1)
    pool.acquire("secret-customer", "x", 1)
    queued = pool.acquire("a", "a0", 1)
    assert isinstance(queued, Queued) and "secret-customer" not in queued.message


def test_free_slots_do_not_idle_behind_a_waiter_that_has_not_asked_again() -> None:
    pool, clock = slots(total=4, per_tenant=4)
    running = [pool.acquire("a", f"a{i}", 1) for i in range(4)]
    assert isinstance(pool.acquire("a", "first", 1), Queued)
    assert isinstance(pool.acquire("a", "second", 1), Queued)
    pool.release(running[0])  # type: ignore[arg-type]
    pool.release(running[1])  # type: ignore[arg-type]
    clock.now = 1
    assert isinstance(pool.acquire("a", "second", 1), Slot)  # two free: "first" keeps the other
    assert isinstance(pool.acquire("a", "third", 1), Queued)
    assert isinstance(pool.acquire("a", "first", 1), Slot)


def test_a_subscribed_waiter_is_woken_when_its_turn_comes_and_never_forgotten() -> None:
    pool, clock = slots(total=1, per_tenant=1)
    running = pool.acquire("a", "a0", 1)
    assert isinstance(pool.acquire("b", "b0", 1), Queued)
    woken: list[str] = []
    assert pool.subscribe("b0", lambda: woken.append("b0")) is False
    clock.now = 500  # long past absence and forgetting: a subscribed waiter is still there
    assert isinstance(pool.acquire("c", "c0", 1), Queued)
    pool.release(running)  # type: ignore[arg-type]
    assert woken == ["b0"]
    assert isinstance(pool.acquire("c", "c0", 1), Queued)  # b0's turn, although it has not asked yet
    assert isinstance(pool.acquire("b", "b0", 1), Slot)


def test_subscribing_when_it_is_already_the_turn_says_so() -> None:
    pool, _ = slots(total=1, per_tenant=1)
    running = pool.acquire("a", "a0", 1)
    assert isinstance(pool.acquire("b", "b0", 1), Queued)
    pool.release(running)  # type: ignore[arg-type]
    assert pool.subscribe("b0", lambda: None) is True


def test_a_tenants_first_ingestion_runs_at_the_configured_niceness_its_further_ones_at_19() -> None:
    pool = IngestionSlots(4, 3, 1000, 50, first_niceness=7)
    first, second = pool.acquire("a", "a-1", 1), pool.acquire("a", "a-2", 1)
    other = pool.acquire("b", "b-1", 1)
    assert isinstance(first, Slot) and isinstance(second, Slot) and isinstance(other, Slot)
    assert (first.niceness, second.niceness, other.niceness) == (7, 19, 7)
    assert pool.acquire("a", "a-2", 1) == second  # asked again while running: the same priority
    assert IngestionSlots(4, 2, 1000, 50).acquire("a", "a-1", 1).niceness == 0  # type: ignore[union-attr]
