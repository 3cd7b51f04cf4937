"""Shards (``sharding``), Leases (``kube.leases``) and their coordination, without a cluster.

The API server's side (that it filters by the same hash) is checked end to end in
tests/e2e/test_shards.py: each version is written by the shard ``Shard.owns`` names.
"""

from __future__ import annotations

import copy
import itertools
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from miosa_operator.coordination import LAYOUT_LABEL, Coordination
from miosa_operator.kube.leases import Lease
from miosa_operator.settings import Settings, SettingsError
from miosa_operator.sharding import HASH_SPACE, Shard, fnv1a64

# ---------------------------------------------------------------------- hashing and ranges


def test_fnv1a64_reference_values() -> None:
    assert fnv1a64("") == 0xCBF29CE484222325
    assert fnv1a64("a") == 0xAF63DC4C8601EC8C
    assert fnv1a64("foobar") == 0x85944171F73967E8


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 64])
def test_shards_cover_the_hash_space_once(count: int) -> None:
    shards = [Shard(i, count) for i in range(count)]
    assert shards[0].start == 0 and shards[-1].end == HASH_SPACE
    assert all(a.end == b.start for a, b in itertools.pairwise(shards))
    uids = [f"{i:08x}-3f2a-4c1d-9e7b-{i * 7919:012x}" for i in range(2000)]
    for uid in uids:
        assert sum(s.owns(uid) for s in shards) == 1


def test_uids_spread_evenly_and_names_would_not() -> None:
    """Why shards are by uid: similar namespace names share their hash's high bits."""
    import uuid

    halves = [Shard(i, 2) for i in range(2)]
    uids = [str(uuid.UUID(int=fnv1a64(str(i)) << 64 | fnv1a64(f"x{i}"))) for i in range(4000)]
    share = sum(halves[0].owns(u) for u in uids) / len(uids)
    assert 0.45 < share < 0.55
    tenants = [f"customer-{i:04d}" for i in range(200)]
    assert len({next(i for i, s in enumerate(halves) if s.owns(t)) for t in tenants}) == 1


def test_selector_syntax_is_the_api_servers() -> None:
    assert Shard(0, 2).selector == "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"
    assert Shard(1, 2).selector == "shardRange(object.metadata.uid, '0x8000000000000000', '0x10000000000000000')"


def test_one_shard_owns_everything_and_bad_indexes_are_refused() -> None:
    assert Shard().owns("anything") and not Shard().sharded
    with pytest.raises(ValueError, match="is not one of"):
        Shard(2, 2)
    with pytest.raises(SettingsError, match="MIOSA_SHARD_INDEX 3 must be below MIOSA_SHARDS"):
        Settings.from_env({"MIOSA_SHARDS": "3", "MIOSA_SHARD_INDEX": "3"})
    assert Settings.from_env({"MIOSA_SHARDS": "3", "MIOSA_SHARD_INDEX": "2"}).shard == Shard(2, 3)


# ---------------------------------------------------------------------- Leases


class FakeLeases:
    """CoordinationV1Api with the API server's compare-and-swap on resourceVersion."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.api_client = SimpleNamespace(sanitize_for_serialization=copy.deepcopy)
        self.lock = threading.Lock()

    def _bump(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[body["metadata"]["name"]] = body
        return body

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> dict[str, Any]:
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[name])

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        with self.lock:
            if body["metadata"]["name"] in self.objects:
                raise ApiException(status=409, reason="AlreadyExists")
            return self._bump(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        with self.lock:
            if self.objects[name]["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
            return self._bump(body)

    def list_namespaced_lease(self, namespace: str, label_selector: str = "", **_: Any) -> Any:
        def view(obj: dict[str, Any]) -> Any:
            spec = obj["spec"]
            return SimpleNamespace(
                metadata=SimpleNamespace(
                    name=obj["metadata"]["name"],
                    labels=obj["metadata"].get("labels"),
                    resource_version=obj["metadata"]["resourceVersion"],
                ),
                spec=SimpleNamespace(
                    holder_identity=spec.get("holderIdentity"), lease_duration_seconds=spec.get("leaseDurationSeconds")
                ),
            )

        return SimpleNamespace(
            items=[view(o) for o in self.objects.values() if label_selector in (o["metadata"].get("labels") or {})]
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time_and_takeover_only_after_expiry() -> None:
    api, clock = FakeLeases(), Clock()
    a = Lease(api, "ns", "l", "a", duration=10, clock=clock)
    b = Lease(api, "ns", "l", "b", duration=10, clock=clock)
    assert a.try_acquire() and not b.try_acquire()
    clock.now += 9
    assert not b.try_acquire()
    assert a.try_acquire()  # a renews: b starts waiting again
    clock.now += 9
    assert not b.try_acquire()
    clock.now += 11  # a silent for longer than the duration
    assert b.try_acquire() and api.objects["l"]["spec"]["holderIdentity"] == "b"
    assert api.objects["l"]["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire()


def test_release_frees_the_lease_at_once() -> None:
    api, clock = FakeLeases(), Clock()
    a = Lease(api, "ns", "l", "a", duration=10, clock=clock)
    b = Lease(api, "ns", "l", "b", duration=10, clock=clock)
    assert a.try_acquire()
    a.release()
    assert b.try_acquire()


def test_two_candidates_racing_for_a_new_lease_never_both_win() -> None:
    api = FakeLeases()
    leases = [Lease(api, "ns", "l", f"p{i}", duration=10) for i in range(8)]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda lease=lease: results.append(lease.try_acquire())) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1


# ---------------------------------------------------------------------- coordination


class Work:
    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    def start(self) -> None:
        self.running, self.starts = True, self.starts + 1

    def stop(self) -> None:
        self.running = False


def coordination(api: FakeLeases, clock: Clock, shard: Shard, name: str, work: Work, lost: list[str]) -> Coordination:
    c = Coordination(SimpleNamespace(), shard, "ns", name, work, on_lost=lambda: lost.append(name), duration=10, clock=clock)
    c.api = api
    c.shard_lease.api = c.singleton_lease.api = api
    return c


def test_a_shard_waits_for_the_shards_of_another_layout() -> None:
    api, clock, lost = FakeLeases(), Clock(), []
    old = coordination(api, clock, Shard(0, 2), "old-0", Work(), lost)
    assert old.shard_lease.try_acquire()
    new = coordination(api, clock, Shard(1, 4), "new-1", Work(), lost)
    assert new.shard_lease.try_acquire()  # its own name is free ...
    assert not new._other_layouts_gone()  # ... but shard 0 of 2 covers part of its range
    clock.now += 5
    assert old.shard_lease.try_acquire()  # still alive
    assert not new._other_layouts_gone()
    clock.now += 6
    assert not new._other_layouts_gone()  # it renewed 6 s ago
    clock.now += 11
    assert new._other_layouts_gone()  # silent for a whole duration: gone
    assert api.objects["miosa-operator-shard-0"]["metadata"]["labels"] == {LAYOUT_LABEL: "2"}


def test_a_released_layout_does_not_hold_up_the_next() -> None:
    api, clock, lost = FakeLeases(), Clock(), []
    old = coordination(api, clock, Shard(0, 2), "old-0", Work(), lost)
    assert old.shard_lease.try_acquire()
    old.stop()
    new = coordination(api, clock, Shard(0, 4), "new-0", Work(), lost)
    new.join(poll=0.01)
    assert new.shard_lease.held and new._other_layouts_gone()


def test_singletons_run_in_one_shard_and_move_when_it_stops() -> None:
    api, clock, lost = FakeLeases(), Clock(), []
    work = [Work(), Work()]
    shards = [coordination(api, clock, Shard(i, 2), f"s{i}", work[i], lost) for i in range(2)]
    for s in shards:
        s._lead(s.singleton_lease.try_acquire())
    assert [w.running for w in work] == [True, False]
    shards[0].stop()  # graceful: releases; stops its singletons
    assert not work[0].running
    shards[1]._lead(shards[1].singleton_lease.try_acquire())
    assert work[1].running and not lost
