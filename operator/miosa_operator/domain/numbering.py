"""Gapless version numbers per Deployment, claimed through the API server.

The counter lives in the Deployment's status (``lastVersionNumber``) and is advanced with
an optimistic-concurrency write (the patch carries the resourceVersion it read; a 409 means
somebody else got there first and we read again).  No process memory is involved, so
numbers survive operator restarts and stay unique with any number of workers.

A claim also records ``pendingNumbers[<version uid>] = n`` in the same write, and is
released after the version's own status holds ``n``.  If the operator dies between the two
writes, the next attempt finds its uid in ``pendingNumbers`` and reuses the number instead of
taking a new one, which is what keeps the sequence gapless.

**Numbers never repeat for a Deployment name**, even when the Deployment is deleted and
created again: its versions outlive it (they are the audit record), so a new incarnation's
counter is *seeded* from the versions of that name (``seed``) in the same write that gives it
its id, and every claim needs that id.  A claim in flight while the Deployment is deleted
cannot slip past the seed: before a version claims number ``n`` from incarnation ``u`` it
writes ``status.numberClaim = {number >= n, deploymentUid: u}`` on itself, so a seed taken
after the old incarnation is gone sees either the claimed number or the claim.  Claims from
the seeding incarnation itself are ignored (they are ordinary contention on its counter, and
counting them would leave gaps).  The price: in the delete-and-re-create race the new
incarnation may skip a number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Counter:
    last: int = 0
    pending: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    number: int
    counter: Counter
    needs_write: bool  # False when the number was already claimed by this uid


def claim_number(counter: Counter, uid: str) -> Claim:
    """The number ``uid`` gets, and the counter to write if it is a new claim."""
    if uid in counter.pending:
        return Claim(counter.pending[uid], counter, needs_write=False)
    number = counter.last + 1
    return Claim(number, Counter(number, {**counter.pending, uid: number}), needs_write=True)


def seed(numbers: Iterable[int | None]) -> int:
    """The first counter value of a Deployment incarnation: the highest number (recorded or
    pending) any version of its name holds, so numbering continues above all of them."""
    return max((n for n in numbers if n), default=0)


def counter_from_status(status: dict[str, object] | None) -> Counter:
    status = status or {}
    last = status.get("lastVersionNumber") or 0
    pending = status.get("pendingNumbers") or {}
    assert isinstance(last, int) and isinstance(pending, dict)
    return Counter(last, {str(k): int(v) for k, v in pending.items()})
