from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from miosa_operator.api.models import Deployment, DeploymentVersion
from miosa_operator.domain.retention import Policy, age_reference, plan_sweep, protected_versions

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def version(
    name: str, state: str, days_ago: int, *, ns: str = "acme", dep: str = "site", retain: bool = False, **status: Any
) -> DeploymentVersion:
    stamp = (NOW - days_ago * DAY).isoformat()
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": ns, "annotations": {"deploy.miosa.io/retain": "true"} if retain else {}},
        "spec": {"deploymentRef": {"name": dep}, "kind": "static", "artifact": {"uri": "s3://uploads/x.tar", "sha256": "a" * 64}},
        "status": {
            "state": state,
            "readyAt": stamp,
            "artifactUri": f"s3://rel/{ns}/{name}/dist.tar.zst",
            "buildLogUri": f"s3://rel/{ns}/{name}/build.log",
            **({"archivedAt": stamp} if state == "archived" else {}),
            **status,
        },
    }
    return DeploymentVersion.model_validate(body)


def deployment(live: str | None, history: list[str], ns: str = "acme", **spec: Any) -> Deployment:
    entries = [{"version": v, "action": "promote", "time": NOW.isoformat()} for v in history]
    return Deployment.model_validate(
        {
            "metadata": {"name": "site", "namespace": ns},
            "spec": {"kind": "static", **spec},
            "status": {"liveVersion": live, "history": entries},
        }
    )


def names(plan: Any) -> list[str]:
    return sorted(d.name for d in plan.collect)


def test_old_archived_and_never_promoted_versions_are_collected() -> None:
    versions = [version("v1", "archived", 40), version("v2", "ready", 40), version("v3", "ready", 1)]
    plan = plan_sweep(versions, [deployment("v3", ["v1", "v3"])], {}, Policy(rollback_window=0), NOW)
    assert names(plan) == ["v1", "v2"]
    assert plan.kept_because() == {"live": 1}


def test_live_window_retained_young_failed_and_collected_are_kept() -> None:
    versions = [
        version("live", "ready", 400),
        version("w1", "archived", 400),
        version("w2", "archived", 400),
        version("out", "archived", 400),
        version("keep", "archived", 400, retain=True),
        version("young", "archived", 29),
        version("bad", "failed", 400),
        version("gone", "archived", 400, artifactsCollectedAt=NOW.isoformat()),
    ]
    dep = deployment("live", ["out", "w2", "w1", "live"])
    plan = plan_sweep(versions, [dep], {}, Policy(rollback_window=3), NOW)
    assert names(plan) == ["out"]
    kept = plan.kept_because()
    assert kept == {
        "live": 1,
        "rollback window": 2,
        "retain annotation": 1,
        "within retention period": 1,
        "no stored release": 1,
        "already collected": 1,
    }


def test_tenant_policy_overrides_default_and_controls_build_logs() -> None:
    versions = [version("a", "archived", 12, ns="acme"), version("b", "archived", 12, ns="globex")]
    deps = [deployment(None, [], ns="acme"), deployment(None, [], ns="globex")]
    plan = plan_sweep(versions, deps, {"acme": Policy(retain_days=10, keep_build_logs=False)}, Policy(), NOW)
    assert names(plan) == ["a"]
    assert plan.collect[0].uris == ("s3://rel/acme/a/dist.tar.zst", "s3://rel/acme/a/build.log")


def test_promoted_and_rolling_out_targets_are_protected() -> None:
    dep = Deployment.model_validate(
        {
            "metadata": {"name": "site", "namespace": "acme"},
            "spec": {"kind": "static", "promotedVersion": "next"},
            "status": {"rollout": {"version": "moving", "action": "promote", "startedAt": NOW.isoformat()}},
        }
    )
    assert protected_versions(dep, 5) == {"next": "promoted", "moving": "rolling out"}


def test_age_counts_from_archive_or_ready() -> None:
    archived = version("a", "archived", 5)
    assert age_reference(archived) == NOW - 5 * DAY
    promoted = version("r", "ready", 10, promotedAt=(NOW - 2 * DAY).isoformat())
    assert age_reference(promoted) == NOW - 2 * DAY
