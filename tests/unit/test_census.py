"""The census's compact form of settled versions (observability.census): the same answers as
full facts, for ids that are ULIDs, across every transition a version can make."""

from __future__ import annotations

from typing import Any

from miosa_operator.domain.ids import new_version_id
from miosa_operator.observability.census import VersionCensus, _id_number, _id_text

NS = "tenant-a"


def body(name: str, state: str | None, *, uid: str | None = None, vid: str | None = None, rv: int | None = None,
         kind: str = "static", namespace: str = NS) -> dict[str, Any]:  # fmt: skip
    metadata: dict[str, Any] = {"namespace": namespace, "name": name, "uid": uid or f"uid-{namespace}-{name}"}
    if rv is not None:
        metadata["resourceVersion"] = str(rv)
    return {"metadata": metadata, "spec": {"kind": kind}, "status": {"state": state, "id": vid} if state else {}}


def test_version_ids_survive_the_compact_form() -> None:
    ids = [new_version_id() for _ in range(50)] + ["ver_" + "0" * 26, "ver_" + "Z" * 26]
    assert all(_id_text(_id_number(vid) or 0) == vid for vid in ids)
    assert _id_number(None) == 0 and _id_text(0) is None
    for odd in ("ver_B", "ver_" + "U" * 26, "dep_" + "0" * 26, 42, "ver_" + "0" * 27):
        assert _id_number(odd) is None


def test_seeded_settled_versions_answer_as_before() -> None:
    census = VersionCensus()
    ids = {f"v{i}": new_version_id() for i in range(300)}
    states = ("ready", "failed", "archived")
    listed = [body(n, states[i % 3], vid=vid, rv=100 + i, kind=("static", "dynamic")[i % 2])
              for i, (n, vid) in enumerate(ids.items())]  # fmt: skip
    assert census.seed(iter(listed)) == 300
    assert len(census) == 300 and sum(census.counts().values()) == 300
    assert census.counts()[("ready", "static")] == 50 and census.counts()[("failed", "dynamic")] == 50
    assert all(census.version_id(NS, n) == vid for n, vid in ids.items())
    assert census.version_id(NS, "nope") is None and census.version_id("other", "v1") is None
    assert census.oldest_seconds("ready") == 0.0  # an age only for states in flight


def test_a_compact_settled_version_leaving_the_watch_stays_counted_and_stale_events_are_ignored() -> None:
    census = VersionCensus()
    vid = new_version_id()
    census.observe("ADDED", body("a", "building", rv=10))
    census.observe("MODIFIED", body("a", "ready", vid=vid, rv=12))  # the journal's write
    census.observe("MODIFIED", body("a", "building", rv=11))  # the watch, late
    census.observe("DELETED", body("a", "building", rv=11))  # out of the selection
    assert census.counts() == {("ready", "static"): 1} and census.version_id(NS, "a") == vid
    assert census.oldest_seconds("building") == 0.0
    census.observe(None, body("a", "ready", vid=vid, rv=12))  # the same again: still one
    assert census.counts() == {("ready", "static"): 1} and len(census) == 1


def test_a_settled_version_going_back_in_flight_leaves_the_settled_counts() -> None:
    now = [1000.0]
    census = VersionCensus(clock=lambda: now[0])
    vid = new_version_id()
    census.observe("MODIFIED", body("a", "archived", vid=vid, rv=5))
    now[0] = 1010.0
    census.observe("MODIFIED", body("a", "building", vid=vid, rv=6))
    now[0] = 1015.0
    assert census.counts() == {("building", "static"): 1} and census.oldest_seconds("building") == 5.0
    census.observe("MODIFIED", body("a", "ready", vid=vid, rv=7))
    assert census.counts() == {("ready", "static"): 1} and census.version_id(NS, "a") == vid


def test_a_new_version_taking_a_settled_name_replaces_it() -> None:
    """A purged settled version is never seen leaving; its name's next owner replaces it."""
    census = VersionCensus()
    old, new = new_version_id(), new_version_id()
    census.seed([body("a", "ready", uid="u1", vid=old, rv=5)])
    census.observe("ADDED", body("a", None, uid="u2", rv=9))
    assert census.counts() == {("unset", "static"): 1} and census.version_id(NS, "a") is None
    census.observe("MODIFIED", body("a", "failed", uid="u2", vid=new, rv=11))
    assert census.counts() == {("failed", "static"): 1} and census.version_id(NS, "a") == new


def test_forgetting_a_namespace_drops_its_compact_versions_only() -> None:
    census = VersionCensus()
    census.seed([body(f"v{i}", "ready", vid=new_version_id(), rv=i + 1, namespace=ns)
                 for ns in (NS, "tenant-b") for i in range(5)])  # fmt: skip
    census.observe("ADDED", body("w", "building", namespace=NS))
    census.forget_namespace(NS)
    assert census.counts() == {("ready", "static"): 5} and len(census) == 5
    assert census.version_id(NS, "v1") is None and census.version_id("tenant-b", "v1") is not None


def test_settled_versions_that_do_not_pack_keep_full_facts() -> None:
    census = VersionCensus()
    census.observe("MODIFIED", body("odd-id", "ready", vid="ver_odd"))
    census.observe("MODIFIED", body("huge-rv", "failed", vid=new_version_id(), rv=1 << 70))
    census.observe("DELETED", body("odd-id", "building"))  # left the watch: still counted
    assert census.counts() == {("ready", "static"): 1, ("failed", "static"): 1}
    assert census.version_id(NS, "odd-id") == "ver_odd"


def test_a_failed_listing_keeps_what_it_counted() -> None:
    census = VersionCensus()

    def listing() -> Any:
        yield body("a", "ready", vid=new_version_id(), rv=1)
        raise RuntimeError("the API server went away")

    try:
        census.seed(listing())
    except RuntimeError:
        pass
    assert census.counts() == {("ready", "static"): 1}
