"""The fake API server itself (tests/unit/fakes.py): it must refuse what the API server
refuses, or the controller tests prove little."""

from __future__ import annotations

import pytest

from miosa_operator.api.models import VersionState
from miosa_operator.domain.states import can_transition
from miosa_operator.kube.client import ApiError, Conflict, TransientApiError

from .conftest import (
    DEPLOYMENTS,
    NS,
    VERSIONS,
    Env,
)
from .crd_rules import STATES, TRANSITIONS, path_to
from .fakes import merge_patch


class TestFakeKube:
    """The fake must refuse what the API server refuses, or the controller tests prove little."""

    def test_merge_patch_follows_rfc_7386(self) -> None:
        assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
            "a": {"c": 2, "e": 3},
            "d": [2],
        }

    def test_resource_version_precondition_and_bumps(self, env: Env) -> None:
        dep = env.deployment()
        rv = dep["metadata"]["resourceVersion"]
        after = env.kube.patch_status(DEPLOYMENTS, NS, "site", {"lastVersionNumber": 1}, resource_version=rv)
        assert int(after["metadata"]["resourceVersion"]) > int(rv)
        with pytest.raises(Conflict):
            env.kube.patch_status(DEPLOYMENTS, NS, "site", {"lastVersionNumber": 2}, resource_version=rv)
        with pytest.raises(Conflict):
            env.kube.patch(DEPLOYMENTS, NS, "site", {"metadata": {"labels": {"a": "b"}}}, resource_version=rv)
        assert env.dep()["status"] == {"lastVersionNumber": 1}

    def test_status_rules_of_the_crd(self, env: Env) -> None:
        env.deployment()
        uri, digest = env.bundle()
        env.static_version("v", "site", uri, digest)
        with pytest.raises(ApiError) as first:
            env.kube.patch_status(VERSIONS, NS, "v", {"state": "building"})
        assert first.value.status == 422
        ver_id = "ver_01HZX4Y3Q8W5N2M7K6J5H4G3F2"
        env.kube.patch_status(VERSIONS, NS, "v", {"state": "created", "id": ver_id, "versionNumber": 3})
        for bad in ({"state": "ready"}, {"id": "ver_01HZX4Y3Q8W5N2M7K6J5H4G3F3"}, {"versionNumber": 4}, {"state": None}):
            with pytest.raises(ApiError) as refused:
                env.kube.patch_status(VERSIONS, NS, "v", bad)
            assert refused.value.status == 422, bad
        env.kube.patch_status(VERSIONS, NS, "v", {"state": "building"})
        with pytest.raises(ApiError):
            env.kube.patch_status(VERSIONS, NS, "v", {"state": "created"})
        env.kube.patch_status(VERSIONS, NS, "v", {"state": "ready"})
        with pytest.raises(ApiError):
            env.kube.patch_status(VERSIONS, NS, "v", {"state": "failed"})
        env.kube.patch_status(VERSIONS, NS, "v", {"state": "archived"})
        env.kube.patch_status(VERSIONS, NS, "v", {"state": "ready"})
        with pytest.raises(ApiError) as schema:
            env.kube.patch_status(VERSIONS, NS, "v", {"artifactSha256": "not-a-sha"})
        assert schema.value.status == 422
        with pytest.raises(ApiError) as immutable:
            env.kube.patch(VERSIONS, NS, "v", {"spec": {"kind": "dynamic"}})
        assert immutable.value.status == 422

    def test_workloads_and_injection(self, env: Env) -> None:
        body = {"metadata": {"name": "w"}, "spec": {"replicas": 1}}
        created = env.kube.create_workload(NS, body)
        assert created["metadata"]["creationTimestamp"] == "2026-05-14T12:00:00Z"
        with pytest.raises(Conflict):
            env.kube.create_workload(NS, body)
        env.kube.inject("get_workload", TransientApiError("boom", status=503), nth=2)
        assert env.kube.get_workload(NS, "w") is not None
        with pytest.raises(TransientApiError):
            env.kube.get_workload(NS, "w")
        assert env.kube.mark_available(NS, "w")["status"]["availableReplicas"] == 1
        assert env.kube.delete_workload(NS, "w") and not env.kube.delete_workload(NS, "w")


# =========================================================================== the CRD's state rule


def test_the_table_is_the_crds_rule_not_a_copy_of_the_operators() -> None:
    """Evaluated from the generated CRD: a first write is `created`, then the five edges; any
    state may be written again unchanged; nothing else."""
    admitted = {move for move, allowed in TRANSITIONS.items() if allowed}
    assert admitted == {
        (None, "created"),
        ("created", "building"),
        ("building", "ready"),
        ("building", "failed"),
        ("ready", "archived"),
        ("archived", "ready"),
    } | {(s, s) for s in STATES}
    assert set(STATES) == {s.value for s in VersionState}


@pytest.mark.parametrize(("old", "new"), list(TRANSITIONS), ids=[f"{old}->{new}" for old, new in TRANSITIONS])
def test_the_fake_admits_exactly_the_state_moves_the_crd_admits(env: Env, old: str | None, new: str) -> None:
    env.deployment()
    uri, digest = env.bundle()
    env.static_version("v", "site", uri, digest)
    for state in path_to(old):
        env.kube.patch_status(VERSIONS, NS, "v", {"state": state})
    if TRANSITIONS[(old, new)]:
        assert env.kube.patch_status(VERSIONS, NS, "v", {"state": new})["status"]["state"] == new
    else:
        with pytest.raises(ApiError) as refused:
            env.kube.patch_status(VERSIONS, NS, "v", {"state": new})
        assert refused.value.status == 422
        assert (env.get("v").get("status") or {}).get("state") == old


@pytest.mark.parametrize(("old", "new"), list(TRANSITIONS), ids=[f"{old}->{new}" for old, new in TRANSITIONS])
def test_the_operators_state_machine_asks_only_for_what_the_crd_admits(old: str | None, new: str) -> None:
    before = VersionState(old) if old is not None else None
    assert can_transition(before, VersionState(new)) == TRANSITIONS[(old, new)]
