"""Gapless version numbers per Deployment, claimed through the API server.

The counter lives in the Deployment's status (``lastVersionNumber``) and is advanced with
an optimistic-concurrency write (the patch carries the resourceVersion it read; a 409 means
somebody else got there first and we read again).  No process memory is involved, so
numbers survive operator restarts and stay unique with any number of workers.

A claim also records ``pendingNumbers[<version uid>] = n`` in the same write, and is
released after the version's own status holds ``n``.  If the operator dies between the two
writes, the next attempt finds its uid in ``pendingNumbers`` and reuses the number instead of
taking a new one, which is what keeps the sequence gapless.
"""

from __future__ import annotations

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


def counter_from_status(status: dict[str, object] | None) -> Counter:
    status = status or {}
    last = status.get("lastVersionNumber") or 0
    pending = status.get("pendingNumbers") or {}
    assert isinstance(last, int) and isinstance(pending, dict)
    return Counter(last, {str(k): int(v) for k, v in pending.items()})
