from __future__ import annotations

import random

from miosa_operator.domain.numbering import Counter, claim_number, counter_from_status


def test_first_claim_is_one_and_records_pending() -> None:
    claim = claim_number(Counter(), "uid-a")
    assert claim.number == 1 and claim.needs_write
    assert claim.counter == Counter(1, {"uid-a": 1})


def test_a_retry_after_a_crash_reuses_the_pending_number() -> None:
    counter = Counter(7, {"uid-a": 5, "uid-b": 7})
    claim = claim_number(counter, "uid-a")
    assert claim.number == 5 and not claim.needs_write


def test_serialised_claims_with_lost_races_are_gapless() -> None:
    """Simulate the compare-and-swap loop: racing workers, one wins per counter version."""
    store = {"counter": Counter(), "rv": 0}
    numbers: dict[str, int] = {}
    pending = [f"uid-{i}" for i in range(30)]
    rng = random.Random(4)
    while pending:
        racers = rng.sample(pending, k=min(3, len(pending)))
        reads = [(uid, store["counter"], store["rv"]) for uid in racers]
        for uid, counter, rv in reads:
            claim = claim_number(counter, uid)
            if rv != store["rv"]:
                continue  # 409: somebody wrote first
            store["counter"], store["rv"] = claim.counter, rv + 1
            numbers[uid] = claim.number
            pending.remove(uid)
            released = dict(claim.counter.pending)
            released.pop(uid)
            store["counter"] = Counter(claim.counter.last, released)
    assert sorted(numbers.values()) == list(range(1, 31))


def test_counter_from_status_tolerates_missing_fields() -> None:
    assert counter_from_status(None) == Counter()
    assert counter_from_status({"lastVersionNumber": 3, "pendingNumbers": {"x": 3}}) == Counter(3, {"x": 3})


def test_a_new_incarnation_is_seeded_above_every_number_of_its_name() -> None:
    from miosa_operator.domain.numbering import seed

    assert seed([]) == 0
    assert seed([3, None, 7, 2]) == 7
