from __future__ import annotations

from miosa_operator.api.conditions import Reason
from miosa_operator.api.models import HistoryAction, PromotionPolicy, VersionKind, VersionState
from miosa_operator.domain.promotion import VersionView, check_promotable, classify, desired_version, newest_ready

S = VersionState


def view(
    name: str,
    number: int | None,
    state: S | None,
    deployment: str = "site",
    kind: VersionKind = VersionKind.STATIC,
    collected: bool = False,
) -> VersionView:
    return VersionView(name=name, deployment=deployment, kind=kind, state=state, number=number, collected=collected)


def test_ready_and_archived_versions_are_promotable() -> None:
    for state in (S.READY, S.ARCHIVED):
        assert check_promotable("site", VersionKind.STATIC, "v", view("v", 1, state)) is None


def test_each_refusal_names_its_reason() -> None:
    waiting, invalid = Reason.WAITING_FOR_VERSION, Reason.INVALID_PROMOTION
    cases = {
        None: (waiting, "no DeploymentVersion of that name exists"),
        view("v", 1, S.READY, deployment="other"): (invalid, "belongs to Deployment 'other', not 'site'"),
        view("v", 1, S.READY, kind=VersionKind.DYNAMIC): (invalid, "is a dynamic version; Deployment 'site' is static"),
        view("v", 1, S.READY, collected=True): (invalid, "artifacts were garbage-collected"),
        view("v", 1, S.FAILED): (Reason.VERSION_FAILED, "is failed; only ready or archived"),
        view("v", 1, S.BUILDING): (waiting, "is building"),
        view("v", None, S.CREATED): (waiting, "is created"),
        view("v", None, None): (waiting, "not yet numbered"),
    }
    for version, (reason, message) in cases.items():
        refusal = check_promotable("site", VersionKind.STATIC, "v", version)
        assert refusal and refusal.reason == reason and message in refusal.message, (version, refusal)


def test_manual_policy_follows_spec() -> None:
    versions = [view("a", 1, S.READY), view("b", 2, S.READY)]
    assert desired_version(PromotionPolicy.MANUAL, "a", "site", versions) == "a"
    assert desired_version(PromotionPolicy.MANUAL, None, "site", versions) is None


def test_auto_policy_takes_newest_ready_skipping_reverted_collected_and_foreign() -> None:
    versions = [
        view("a", 1, S.ARCHIVED),
        view("b", 2, S.READY),
        view("c", 3, S.READY, collected=True),
        view("d", 4, S.BUILDING),
        view("e", 5, S.READY),
        view("x", 9, S.READY, deployment="other"),
    ]
    assert desired_version(PromotionPolicy.AUTO, "a", "site", versions) == "e"
    assert desired_version(PromotionPolicy.AUTO, None, "site", versions, reverted=["e"]) == "b"
    assert newest_ready("site", []) is None


def test_classify_actions() -> None:
    assert classify(PromotionPolicy.MANUAL, 3, 2) == HistoryAction.PROMOTE
    assert classify(PromotionPolicy.MANUAL, 1, 2) == HistoryAction.ROLLBACK
    assert classify(PromotionPolicy.MANUAL, 1, None) == HistoryAction.PROMOTE
    assert classify(PromotionPolicy.AUTO, 1, 2) == HistoryAction.AUTO


def test_view_from_body() -> None:
    body = {
        "metadata": {"name": "v"},
        "spec": {"deploymentRef": {"name": "site"}, "kind": "dynamic"},
        "status": {"state": "archived", "versionNumber": 4, "artifactsCollectedAt": "2026-01-01T00:00:00Z", "id": "ver_X"},
    }
    assert VersionView.from_body(body) == VersionView("v", "site", VersionKind.DYNAMIC, S.ARCHIVED, 4, True, "ver_X")


def test_view_from_model_matches_view_from_body() -> None:
    from miosa_operator.api.models import DeploymentVersion

    body = {
        "metadata": {"name": "v"},
        "spec": {
            "deploymentRef": {"name": "site"},
            "kind": "static",
            "artifact": {"uri": "s3://uploads/x.tar", "sha256": "a" * 64},
        },
        "status": {"state": "ready", "versionNumber": 2, "id": "ver_" + "1" * 26},
    }
    assert VersionView.from_model(DeploymentVersion.model_validate(body)) == VersionView.from_body(body)


def test_refusals_say_whether_waiting_can_help() -> None:
    from miosa_operator.api.conditions import Reason
    from miosa_operator.domain.promotion import check_promotable

    cases = {
        None: Reason.WAITING_FOR_VERSION,
        view("v", None, None): Reason.WAITING_FOR_VERSION,
        view("v", 1, S.CREATED): Reason.WAITING_FOR_VERSION,
        view("v", 1, S.BUILDING): Reason.WAITING_FOR_VERSION,
        view("v", 1, S.FAILED): Reason.VERSION_FAILED,
        view("v", 1, S.READY, deployment="other"): Reason.INVALID_PROMOTION,
        view("v", 1, S.READY, kind=VersionKind.DYNAMIC): Reason.INVALID_PROMOTION,
        view("v", 1, S.ARCHIVED, collected=True): Reason.INVALID_PROMOTION,
    }
    for version, reason in cases.items():
        refusal = check_promotable("site", VersionKind.STATIC, "v", version)
        assert refusal is not None and refusal.reason == reason, version
        assert refusal.final == (reason != Reason.WAITING_FOR_VERSION)
    assert check_promotable("site", VersionKind.STATIC, "v", view("v", 1, S.ARCHIVED)) is None


def test_a_version_claimed_by_retention_is_refused_and_never_chosen() -> None:
    claimed = VersionView(name="v", deployment="site", kind=VersionKind.STATIC, state=S.ARCHIVED, number=1, claimed=True)
    refusal = check_promotable("site", VersionKind.STATIC, "v", claimed)
    assert refusal and refusal.final and "retention is collecting its artifacts" in refusal.message
    newer = VersionView(name="w", deployment="site", kind=VersionKind.STATIC, state=S.READY, number=2, claimed=True)
    assert desired_version(PromotionPolicy.AUTO, None, "site", [claimed, newer]) is None
    body = {
        "metadata": {"name": "v"},
        "spec": {"deploymentRef": {"name": "site"}, "kind": "static"},
        "status": {"state": "ready", "versionNumber": 1, "collectionClaimedAt": "2026-01-01T00:00:00Z", "deploymentId": "dep_x"},
    }
    assert VersionView.from_body(body).claimed and VersionView.from_body(body).deployment_id == "dep_x"


def test_auto_considers_only_versions_of_the_current_incarnation() -> None:
    old = VersionView(name="old", deployment="site", kind=VersionKind.STATIC, state=S.READY, number=7, deployment_id="dep_old")
    new = VersionView(name="new", deployment="site", kind=VersionKind.STATIC, state=S.READY, number=8, deployment_id="dep_new")
    assert desired_version(PromotionPolicy.AUTO, None, "site", [old], deployment_id="dep_new") is None
    assert desired_version(PromotionPolicy.AUTO, None, "site", [old, new], deployment_id="dep_new") == "new"
    # Manual promotion of the old incarnation's version stays possible: it is explicit.
    assert check_promotable("site", VersionKind.STATIC, "old", old) is None
