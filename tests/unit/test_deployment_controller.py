"""DeploymentController against the in-memory API server (``FakeKube``).

Versions are written straight into the fake in the states the version controller would leave
them in; the apps/v1 Deployment controller is played by ``mark_available``.  Covered: a
rollout to completion, a missed deadline and its revert, the ownership rule for the live
workload, its Service and budget (no adoption, drift put back), numbering across a delete and
re-create of the Deployment, Auto and old incarnations, and the promotion mark that makes
collection and promotion exclusive.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from miosa_operator.api import meta
from miosa_operator.controllers.common import Retry
from miosa_operator.controllers.deployments import DeploymentController
from miosa_operator.controllers.versions import VersionController
from miosa_operator.domain.ids import new_version_id
from miosa_operator.render import live
from miosa_operator.settings import Settings
from miosa_operator.store import FileStore, StoreRouter

from .fakes import BUDGETS, SERVICES, WORKLOADS, FakeClock, FakeKube, RecordingEvents, iso
from .kstatus import kstatus

Obj = dict[str, Any]
NS = "tenant-a"
VERSIONS, DEPLOYMENTS = meta.VERSION_PLURAL, meta.DEPLOYMENT_PLURAL
SERVER = live.StaticServer("miosa/operator:1", "http://miosa-operator-artifacts.miosa-system.svc:8081")


class Env:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube(clock=self.clock)
        self.events = RecordingEvents()
        self.config = Settings.defaults(poll_interval=0.5, number_order_patience=0.0)
        self.controller = DeploymentController(self.kube, self.config, self.events, SERVER, self.clock)

    def deployment(self, name: str = "app", kind: str = "dynamic", **spec: Any) -> Obj:
        body = {"apiVersion": meta.API_VERSION, "kind": "Deployment", "metadata": {"name": name, "namespace": NS}}
        return self.kube.create(DEPLOYMENTS, {**body, "spec": {"kind": kind, **spec}})

    def version(
        self, name: str, number: int | None, dep: str = "app", image: str = "registry.example/app:1", state: str = "ready"
    ) -> Obj:
        self.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "metadata": {"name": name, "namespace": NS, "labels": {meta.LABEL_DEPLOYMENT: dep}},
                "spec": {
                    "deploymentRef": {"name": dep},
                    "kind": "dynamic",
                    "runtime": {"image": image, "port": 8080, "healthCheckPath": "/healthz"},
                },
            },
        )
        dep_id = ((self.kube.peek(DEPLOYMENTS, NS, dep) or {}).get("status") or {}).get("id")
        status = {"id": new_version_id(), "state": "created", "tenantId": NS, "versionNumber": number, "deploymentId": dep_id}
        self.kube.patch_status(VERSIONS, NS, name, {k: v for k, v in status.items() if v is not None})
        self.kube.patch_status(VERSIONS, NS, name, {"state": "building"})
        if state != "building":
            self.kube.patch_status(VERSIONS, NS, name, {"state": state, "readyAt": iso(self.clock())})
        return self.get(name)

    def get(self, name: str) -> Obj:
        obj = self.kube.peek(VERSIONS, NS, name)
        assert obj is not None
        return obj

    def dep(self, name: str = "app") -> Obj:
        obj = self.kube.peek(DEPLOYMENTS, NS, name)
        assert obj is not None
        return obj

    def promote(self, version: str, dep: str = "app") -> None:
        self.kube.patch(DEPLOYMENTS, NS, dep, {"spec": {"promotedVersion": version}})

    def step(self, dep: str = "app") -> Retry | None:
        try:
            self.controller.reconcile(self.dep(dep))
        except Retry as wait:
            return wait
        return None

    def workload(self, name: str = "app") -> Obj:
        obj = self.kube.peek(WORKLOADS, NS, name)
        assert obj is not None
        return obj

    def live(self, version: str, dep: str = "app") -> Obj:
        """Promote ``version`` and play the cluster until it is live."""
        self.promote(version, dep)
        assert isinstance(self.step(dep), Retry)
        self.kube.mark_available(NS, dep)
        assert self.step(dep) is None
        assert self.dep(dep)["status"]["liveVersion"] == version
        return self.dep(dep)


@pytest.fixture
def env() -> Env:
    environment = Env()
    environment.deployment()
    assert environment.step() is None  # id assigned, nothing promoted
    return environment


def condition(obj: Obj, type_: str) -> Obj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


# =========================================================================== rollouts


def test_a_rollout_completes_and_records_everything_in_order(env: Env) -> None:
    env.version("app-v1", 1)
    env.promote("app-v1")
    assert isinstance(env.step(), Retry)
    dep = env.dep()
    assert dep["status"]["rollout"]["version"] == "app-v1" and kstatus(dep) == "InProgress"
    mark = env.get("app-v1")["status"]["promotion"]
    assert mark["deploymentUid"] == dep["metadata"]["uid"]  # marked before the rollout started
    owned = {o["kind"]: o["uid"] for o in dep["status"]["ownedObjects"]}
    assert owned == {
        "Service": env.kube.peek(SERVICES, NS, "app")["metadata"]["uid"],
        "Deployment": env.workload()["metadata"]["uid"],
    }  # type: ignore[index]
    assert env.workload()["metadata"]["labels"]["deploy.miosa.io/deployment-id"] == dep["status"]["id"]

    env.kube.mark_available(NS, "app")
    assert env.step() is None
    dep = env.dep()
    assert dep["status"]["liveVersion"] == "app-v1" and dep["status"]["history"][-1]["action"] == "promote"
    assert kstatus(dep) == "Current"
    version = env.get("app-v1")
    assert version["status"]["promotedAt"] and "promotion" not in version["status"]
    # The mark goes only after the Deployment's status names the version live.
    writes = [(c.args["plural"], c.args["status"]) for c in env.kube.calls if c.method == "patch_status"]
    live_write = next(i for i, (p, s) in enumerate(writes) if p == DEPLOYMENTS and s.get("liveVersion") == "app-v1")
    unmark = next(i for i, (p, s) in enumerate(writes) if p == VERSIONS and "promotion" in s and s["promotion"] is None)
    assert live_write < unmark

    # A steady reconcile writes nothing to the workload.
    before = len(env.kube.writes)
    assert env.step() is None
    assert len(env.kube.writes) == before


def test_the_live_pod_meets_pod_security_restricted(env: Env) -> None:
    env.version("app-v1", 1)
    env.live("app-v1")
    pod = env.workload()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"]
    assert not [c for c in env.dep()["status"]["conditions"] if c["type"] == "SecurityRelaxed"]


def test_relaxing_pod_security_is_explicit_and_reported(env: Env) -> None:
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"podSecurity": {"allowRoot": True, "writableRootFilesystem": True}}})
    env.version("app-v1", 1)
    env.live("app-v1")
    container = env.workload()["spec"]["template"]["spec"]["containers"][0]
    assert "runAsNonRoot" not in container["securityContext"] and "capabilities" not in container["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    relaxed = condition(env.dep(), "SecurityRelaxed")
    assert relaxed["status"] == "True" and "allowRoot" in relaxed["message"] and "writableRootFilesystem" in relaxed["message"]
    assert ("Warning", "SecurityRelaxed") in [(e.type, e.reason) for e in env.events.events]
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"podSecurity": None}})
    assert isinstance(env.step(), Retry)  # the pods roll to the restricted template
    env.kube.mark_available(NS, "app")
    assert env.step() is None
    assert not [c for c in env.dep()["status"]["conditions"] if c["type"] == "SecurityRelaxed"]


def test_a_missed_deadline_reverts_to_the_previous_version(env: Env) -> None:
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"rollout": {"progressDeadlineSeconds": 30}}})
    env.version("app-v1", 1)
    env.version("app-v2", 2, image="registry.example/app:2")
    env.live("app-v1")
    env.promote("app-v2")
    assert isinstance(env.step(), Retry)
    assert env.get("app-v2")["status"]["promotion"]
    env.clock.advance(31)
    assert env.step() is None
    dep = env.dep()
    assert dep["status"]["liveVersion"] == "app-v1" and dep["status"]["history"][-1]["action"] == "revert"
    assert condition(dep, "RolloutFailed")["status"] == "True" and kstatus(dep) == "Failed"
    assert condition(dep, "Ready")["reason"] == "RolloutReverted"
    assert "promotion" not in env.get("app-v2")["status"]  # a reverted version is collectable again
    image = env.workload()["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/app:1"
    assert ("Warning", "RolloutReverted") in [(e.type, e.reason) for e in env.events.events]


def test_a_superseded_rollout_drops_its_mark(env: Env) -> None:
    env.version("app-v1", 1)
    env.version("app-v2", 2)
    env.promote("app-v1")
    assert isinstance(env.step(), Retry)
    env.promote("app-v2")
    assert isinstance(env.step(), Retry)
    assert "promotion" not in env.get("app-v1")["status"] and env.get("app-v2")["status"]["promotion"]


def test_a_budget_is_created_updated_and_removed_with_the_spec(env: Env) -> None:
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}}})
    env.version("app-v1", 1)
    env.live("app-v1")
    budget = env.kube.peek(BUDGETS, NS, "app")
    assert budget is not None and budget["spec"] == {
        "selector": {"matchLabels": {"deploy.miosa.io/app": "app"}},
        "minAvailable": 2,
    }
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"podDisruptionBudget": {"maxUnavailable": "50%", "minAvailable": None}}})
    assert env.step() is None  # the pods do not change
    assert env.kube.peek(BUDGETS, NS, "app")["spec"]["maxUnavailable"] == "50%"  # type: ignore[index]
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"podDisruptionBudget": None}})
    assert env.step() is None
    assert env.kube.peek(BUDGETS, NS, "app") is None
    assert {o["kind"] for o in env.dep()["status"]["ownedObjects"]} == {"Service", "Deployment"}


def test_tolerations_pull_secrets_and_resources_reach_the_live_pods(env: Env) -> None:
    env.kube.patch(
        DEPLOYMENTS,
        NS,
        "app",
        {
            "spec": {
                "tolerations": [{"operator": "Exists"}],
                "imagePullSecrets": [{"name": "reg"}],
                "resources": {"limits": {"memory": "2Gi"}},
            }
        },
    )
    env.version("app-v1", 1)
    env.live("app-v1")
    pod = env.workload()["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}] and pod["imagePullSecrets"] == [{"name": "reg"}]
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "2Gi"}}


# =========================================================================== only own objects


def foreign(kind: str, **metadata: Any) -> Obj:
    bodies = {
        "Service": {"spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}},
        "Deployment": {
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "theirs"}},
                "template": {
                    "metadata": {"labels": {"app": "theirs"}},
                    "spec": {"containers": [{"name": "x", "image": "evil:1"}]},
                },
            }
        },
    }
    return {"kind": kind, "metadata": {"name": "app", **metadata}, **bodies[kind]}


@pytest.mark.parametrize("kind", ["Service", "Deployment"])
def test_a_same_named_foreign_object_is_a_name_conflict_never_adopted(env: Env, kind: str) -> None:
    theirs = env.kube.create_object(kind, NS, foreign(kind))
    env.version("app-v1", 1)
    env.promote("app-v1")
    for _ in range(3):
        assert isinstance(env.step(), Retry)
    dep = env.dep()
    assert condition(dep, "Stalled")["reason"] == "NameConflict" and kstatus(dep) == "Failed"
    assert f"{kind} 'app' exists and was not created by miosa-operator" in condition(dep, "Ready")["message"]
    assert [(e.type, e.reason) for e in env.events.events if e.reason == "NameConflict"] == [("Warning", "NameConflict")]
    untouched = env.kube.get_object(kind, NS, "app")
    assert (
        untouched is not None
        and untouched["spec"] == theirs["spec"]
        and untouched["metadata"]["uid"] == theirs["metadata"]["uid"]
    )
    assert not [c for c in env.kube.calls if c.method in ("replace_object", "delete_object") and c.args["kind"] == kind]

    env.kube.delete_object(kind, NS, "app")  # the tenant renames theirs
    assert isinstance(env.step(), Retry)
    env.kube.mark_available(NS, "app")
    assert env.step() is None
    assert env.dep()["status"]["liveVersion"] == "app-v1"


def test_objects_forging_our_owner_reference_are_deleted_and_recreated(env: Env) -> None:
    dep = env.dep()
    owner = {
        "apiVersion": meta.API_VERSION,
        "kind": "Deployment",
        "name": "app",
        "uid": dep["metadata"]["uid"],
        "controller": True,
    }
    labels = {"deploy.miosa.io/deployment-id": dep["status"]["id"]}
    forged = env.kube.create_object("Deployment", NS, foreign("Deployment", ownerReferences=[owner], labels=labels))
    env.version("app-v1", 1)
    env.promote("app-v1")
    assert isinstance(env.step(), Retry)
    ours = env.workload()
    assert ours["metadata"]["uid"] != forged["metadata"]["uid"]
    assert ours["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/app:1"


def test_workloads_of_a_release_that_kept_no_record_are_adopted_once(env: Env) -> None:
    env.version("app-v1", 1)
    env.live("app-v1")
    # As an older release left it: no ownedObjects, no id label on the objects.
    env.kube.objects[(DEPLOYMENTS, NS, "app")]["status"].pop("ownedObjects")
    for key in (WORKLOADS, SERVICES):
        env.kube.objects[(key, NS, "app")]["metadata"]["labels"].pop("deploy.miosa.io/deployment-id")
    uid = env.workload()["metadata"]["uid"]
    assert env.step() is None
    assert env.workload()["metadata"]["uid"] == uid  # not deleted: no downtime on upgrade
    assert env.workload()["metadata"]["labels"]["deploy.miosa.io/deployment-id"] == env.dep()["status"]["id"]
    assert {o["kind"] for o in env.dep()["status"]["ownedObjects"]} == {"Service", "Deployment"}


def test_edits_to_our_objects_are_put_back(env: Env) -> None:
    env.version("app-v1", 1)
    env.live("app-v1")
    workload = env.kube.objects[(WORKLOADS, NS, "app")]
    workload["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"  # the hash annotation is left as it was
    env.kube.objects[(SERVICES, NS, "app")]["spec"]["selector"] = {"app": "theirs"}
    assert isinstance(env.step(), Retry)  # replaced: the new template rolls out
    assert env.workload()["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/app:1"
    assert env.kube.peek(SERVICES, NS, "app")["spec"]["selector"] == {"deploy.miosa.io/app": "app"}  # type: ignore[index]


# =========================================================================== numbering across incarnations


def test_numbers_never_repeat_across_delete_and_recreate_and_auto_ignores_the_old_incarnation(tmp_path: Any) -> None:
    env = Env()
    versions = VersionController(env.kube, StoreRouter(FileStore()), env.config, env.events, env.clock)

    def number(name: str) -> int:
        env.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"deploymentRef": {"name": "app"}, "kind": "dynamic", "runtime": {"image": "img:1"}},
            },
        )
        for _ in range(10):
            try:
                versions.reconcile(env.get(name))
            except Retry:
                if env.kube.peek(WORKLOADS, NS, f"{name}-verify"):
                    env.kube.mark_available(NS, f"{name}-verify")
                continue
            break
        return env.get(name)["status"]["versionNumber"]

    env.deployment(promotionPolicy="Auto")
    assert [number("app-v1"), number("app-v2")] == [1, 2]
    old_id = env.dep()["status"]["id"]
    # The tenant deletes the Deployment and creates it again under the same name.
    env.kube.remove(DEPLOYMENTS, NS, "app")
    env.deployment(promotionPolicy="Auto")
    assert env.step() is None  # the id write seeds the counter above the name's versions
    dep = env.dep()
    assert dep["status"]["id"] != old_id and dep["status"]["lastVersionNumber"] == 2
    assert condition(dep, "Ready")["reason"] == "NothingPromoted"  # the old incarnation's ready v2 is not chosen
    assert number("app-v3") == 3
    assert env.get("app-v3")["status"]["deploymentId"] == dep["status"]["id"]
    assert isinstance(env.step(), Retry)
    assert env.dep()["status"]["rollout"]["version"] == "app-v3"


def test_a_claim_in_flight_while_the_deployment_is_recreated_is_not_reused(tmp_path: Any) -> None:
    env = Env()
    versions = VersionController(env.kube, StoreRouter(FileStore()), env.config, env.events, env.clock)
    env.deployment()
    for name in ("app-v1", "app-v2"):
        env.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"deploymentRef": {"name": "app"}, "kind": "dynamic", "runtime": {"image": "img:1"}},
            },
        )

    def recreate(plural: str, status: Obj | None = None, resource_version: str | None = None, **_: Any) -> None:
        """Right after app-v1 claimed its number: the Deployment is deleted and created again,
        and the new incarnation numbers app-v2 before app-v1 records its number."""
        if plural == DEPLOYMENTS and resource_version is not None and (status or {}).get("pendingNumbers"):
            return
        if plural == VERSIONS and (status or {}).get("versionNumber") and not recreated:
            recreated.append(True)
            env.kube.remove(DEPLOYMENTS, NS, "app")
            env.deployment()
            with pytest.raises(Retry):
                versions.reconcile(env.get("app-v2"))  # numbered, then the health gate starts

    recreated: list[bool] = []
    env.kube.inject("patch_status", recreate, times=None)
    with pytest.raises(Retry):
        versions.reconcile(env.get("app-v1"))
    assert recreated
    numbers = {env.get(n)["status"]["versionNumber"] for n in ("app-v1", "app-v2")}
    assert numbers == {1, 2}, numbers


# =========================================================================== collection versus promotion


def test_a_version_claimed_by_retention_is_never_rolled_out(env: Env) -> None:
    env.version("app-v1", 1)
    env.version("app-v2", 2)
    env.live("app-v1")
    env.promote("app-v2")
    listed = env.get("app-v2")

    def collector_claims_first(plural: str, name: str, status: Obj | None = None, **_: Any) -> bool:
        return plural == VERSIONS and name == "app-v2" and "promotion" in (status or {})

    def claim(**_: Any) -> None:
        env.kube.patch_status(
            VERSIONS,
            NS,
            "app-v2",
            {"collectionClaimedAt": iso(env.clock())},
            resource_version=listed["metadata"]["resourceVersion"],
        )

    env.kube.inject("patch_status", claim, when=collector_claims_first)
    wait = env.step()
    assert isinstance(wait, Retry) and not wait.planned  # the mark lost the race
    assert env.step() is None
    dep = env.dep()
    assert dep["status"]["liveVersion"] == "app-v1" and dep["status"].get("rollout") is None
    assert condition(dep, "Stalled")["reason"] == "InvalidPromotion"
    assert "retention is collecting its artifacts" in condition(dep, "Ready")["message"]
    assert "promotion" not in env.get("app-v2")["status"]


def test_a_marked_version_cannot_be_claimed(env: Env) -> None:
    env.version("app-v1", 1)
    listed = env.get("app-v1")
    env.promote("app-v1")
    assert isinstance(env.step(), Retry)  # marked, rolling out
    from miosa_operator.kube.client import Conflict

    with pytest.raises(Conflict):  # the collector's claim with the resourceVersion it listed
        env.kube.patch_status(
            VERSIONS,
            NS,
            "app-v1",
            {"collectionClaimedAt": iso(env.clock())},
            resource_version=listed["metadata"]["resourceVersion"],
        )
    env.clock.advance(timedelta(days=400))
    assert env.get("app-v1")["status"]["promotion"]


def test_a_reconcile_that_outlives_its_deployment_never_writes_onto_a_namesake(env: Env) -> None:
    env.version("app-v1", 1)
    env.live("app-v1")
    stale = env.dep()  # a reconcile still holding this body...
    env.kube.remove(DEPLOYMENTS, NS, "app")  # ...while the tenant deletes the Deployment
    for key in (WORKLOADS, SERVICES):  # the garbage collector removes what it owned
        env.kube.remove(key, NS, "app")
    env.deployment()  # and creates it again under the same name
    assert env.controller.reconcile(stale) is None  # nothing left to do for the old one
    fresh = env.dep()
    assert "liveVersion" not in (fresh.get("status") or {}) and "conditions" not in (fresh.get("status") or {})
    assert env.step() is None
    assert condition(env.dep(), "Ready")["reason"] == "NothingPromoted"


# =========================================================================== failed rollouts stay failed


def test_a_failed_rollout_with_nothing_to_revert_to_stays_failed_until_spec_changes(env: Env) -> None:
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"rollout": {"progressDeadlineSeconds": 30}}})
    env.version("app-v1", 1)
    env.promote("app-v1")
    assert isinstance(env.step(), Retry)
    env.clock.advance(31)
    assert env.step() is None
    dep = env.dep()
    assert dep["status"]["revertedVersions"] == ["app-v1"] and "rollout" not in dep["status"]
    assert condition(dep, "Ready")["reason"] == "ProgressDeadlineExceeded" and kstatus(dep) == "Failed"
    assert condition(dep, "RolloutFailed")["status"] == "True"
    assert ("Warning", "RolloutFailed") in [(e.type, e.reason) for e in env.events.events]
    # Reconciled again (a restart, a resync): held, not retried, and it says why.
    assert env.step() is None
    assert "rollout" not in env.dep()["status"] and "nothing to revert to" in condition(env.dep(), "Ready")["message"]
    writes = len(env.kube.writes)
    assert env.step() is None
    assert env.kube.writes[writes:] == []  # held: no rollout, not even a status write
    # A new generation (any spec change) tries again.
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"replicas": 2}})
    assert isinstance(env.step(), Retry)
    assert env.dep()["status"]["rollout"]["version"] == "app-v1"


def test_without_auto_revert_a_missed_deadline_leaves_the_previous_version_serving(env: Env) -> None:
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"rollout": {"progressDeadlineSeconds": 30, "autoRevert": False}}})
    env.version("app-v1", 1)
    env.version("app-v2", 2, image="registry.example/app:2")
    env.live("app-v1")
    env.promote("app-v2")
    assert isinstance(env.step(), Retry)
    env.clock.advance(31)
    assert env.step() is None
    dep = env.dep()
    assert dep["status"]["liveVersion"] == "app-v1" and dep["status"]["revertedVersions"] == ["app-v2"]
    assert "autoRevert is off" in condition(dep, "RolloutFailed")["message"]
    assert condition(dep, "Ready")["reason"] == "ProgressDeadlineExceeded"
    assert all(entry["action"] != "revert" for entry in dep["status"]["history"])


def test_a_retry_annotation_releases_a_reverted_version_once(env: Env) -> None:
    env.kube.patch(DEPLOYMENTS, NS, "app", {"spec": {"rollout": {"progressDeadlineSeconds": 30}}})
    env.version("app-v1", 1)
    env.version("app-v2", 2, image="registry.example/app:2")
    env.live("app-v1")
    env.promote("app-v2")
    assert isinstance(env.step(), Retry)
    env.clock.advance(31)
    assert env.step() is None and env.dep()["status"]["revertedVersions"] == ["app-v2"]
    env.kube.patch(DEPLOYMENTS, NS, "app", {"metadata": {"annotations": {meta.ANNOTATION_RETRY: "app-v2@1"}}})
    assert isinstance(env.step(), Retry)  # rolling out app-v2 again
    dep = env.dep()
    assert dep["status"]["revertedVersions"] == [] and dep["status"]["lastRetryToken"] == "app-v2@1"
    assert dep["status"]["rollout"]["version"] == "app-v2"
    env.kube.mark_available(NS, "app")
    assert env.step() is None and env.dep()["status"]["liveVersion"] == "app-v2"
    assert env.step() is None and env.dep()["status"]["lastRetryToken"] == "app-v2@1"  # the same token acts once


# =========================================================================== steady state


def test_a_live_workload_that_loses_replicas_is_reported_scaling(env: Env) -> None:
    env.version("app-v1", 1)
    env.live("app-v1")
    env.kube.objects[(WORKLOADS, NS, "app")]["status"]["availableReplicas"] = 0
    wait = env.step()
    assert isinstance(wait, Retry) and wait.planned
    assert condition(env.dep(), "Ready")["reason"] == "Scaling" and kstatus(env.dep()) == "InProgress"
    env.kube.mark_available(NS, "app")
    assert env.step() is None and condition(env.dep(), "Ready")["reason"] == "Live"


def test_number_claims_of_deleted_and_of_numbered_versions_are_pruned(env: Env) -> None:
    """A claim is kept while its version has no number; the claims of deleted versions and
    the recorded ones a process that died still owed a release (``claim_releases``) go."""
    numbered = env.version("app-v1", 1)["metadata"]["uid"]
    kept = env.version("app-v2", None, state="building")["metadata"]["uid"]
    claims = {numbered: 1, kept: 2, "uid-of-a-deleted-version": 3}
    env.kube.patch_status(DEPLOYMENTS, NS, "app", {"pendingNumbers": claims})
    assert env.step() is None
    assert env.dep()["status"]["pendingNumbers"] == {kept: 2}
    writes = len(env.kube.writes)
    assert env.step() is None
    assert not [c for c in env.kube.writes[writes:] if "pendingNumbers" in (c.args.get("status") or {})]


# =========================================================================== Auto, woken by the version controller


def test_auto_goes_live_with_each_new_ready_version_woken_by_the_version_controller() -> None:
    env = Env()
    versions = VersionController(env.kube, StoreRouter(FileStore()), env.config, env.events, env.clock)
    env.deployment(promotionPolicy="Auto")
    assert env.step() is None

    def publish(name: str, image: str) -> None:
        env.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"deploymentRef": {"name": "app"}, "kind": "dynamic", "runtime": {"image": image, "port": 8080}},
            },
        )
        for _ in range(10):
            try:
                versions.reconcile(env.get(name))
            except Retry:
                if env.kube.peek(WORKLOADS, NS, f"{name}-verify"):
                    env.kube.mark_available(NS, f"{name}-verify")
                continue
            break
        assert env.get(name)["status"]["state"] == "ready"

    publish("app-v1", "registry.example/app:1")
    assert env.dep()["metadata"]["annotations"][meta.ANNOTATION_VERSION_SETTLED] == "app-v1:ready"
    assert isinstance(env.step(), Retry)
    env.kube.mark_available(NS, "app")
    assert env.step() is None and env.dep()["status"]["liveVersion"] == "app-v1"
    publish("app-v2", "registry.example/app:2")
    assert env.dep()["metadata"]["annotations"][meta.ANNOTATION_VERSION_SETTLED] == "app-v2:ready"
    assert isinstance(env.step(), Retry)
    env.kube.mark_available(NS, "app")
    assert env.step() is None
    dep = env.dep()
    assert dep["status"]["liveVersion"] == "app-v2" and dep["status"]["history"][-1]["action"] == "auto"
    assert env.get("app-v1")["status"]["state"] == "archived"


def test_a_manual_deployment_is_woken_only_by_the_version_it_names() -> None:
    env = Env()
    versions = VersionController(env.kube, StoreRouter(FileStore()), env.config, env.events, env.clock)
    env.deployment()
    assert env.step() is None
    for name in ("app-v1", "app-v2"):
        env.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": "DeploymentVersion",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"deploymentRef": {"name": "app"}, "kind": "dynamic", "runtime": {"image": "img:1", "port": 8080}},
            },
        )
    env.promote("app-v2")
    for name in ("app-v1", "app-v2"):
        for _ in range(10):
            try:
                versions.reconcile(env.get(name))
            except Retry:
                if env.kube.peek(WORKLOADS, NS, f"{name}-verify"):
                    env.kube.mark_available(NS, f"{name}-verify")
                continue
            break
        settled = (env.dep()["metadata"].get("annotations") or {}).get(meta.ANNOTATION_VERSION_SETTLED)
        assert settled == (None if name == "app-v1" else "app-v2:ready"), name


def test_a_manual_deployment_reads_only_the_versions_it_names() -> None:
    """No LIST of every version for a Manual Deployment: one GET per version it names."""
    env = Env()
    env.deployment()
    for n in range(1, 41):
        env.version(f"v{n}", n)
    env.live("v3")
    env.kube.calls.clear()
    env.controller.reconcile(env.dep())  # the steady state: v3 live, nothing to do
    assert env.kube.calls_to("list", VERSIONS) == []
    assert [c.args.get("name") for c in env.kube.calls_to("get", VERSIONS)] == ["v3"]


def test_an_auto_deployment_and_pending_claims_still_see_every_version() -> None:
    env = Env()
    env.deployment(promotionPolicy="Auto")
    env.step()  # its id first: Auto only considers versions of this incarnation
    for n in range(1, 4):
        env.version(f"v{n}", n)
    env.kube.calls.clear()
    assert isinstance(env.step(), Retry)
    assert len(env.kube.calls_to("list", VERSIONS)) == 1
    assert env.dep()["status"]["rollout"]["version"] == "v3"


def test_a_version_of_another_deployment_is_not_found_by_name() -> None:
    env = Env()
    env.deployment("other")
    env.version("shared-name", 1, dep="other")
    env.deployment(promotedVersion="shared-name")
    env.step()
    ready = next(c for c in env.dep()["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "shared-name" in ready["message"]
