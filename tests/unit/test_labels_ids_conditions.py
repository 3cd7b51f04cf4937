from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from miosa_operator.api import meta
from miosa_operator.api.conditions import Reason
from miosa_operator.api.models import ConditionStatus, DeploymentVersionSpec
from miosa_operator.domain.conditions import Health, get_condition, health_conditions, set_condition
from miosa_operator.domain.ids import new_deployment_id, new_version_id, ulid
from miosa_operator.domain.labels import label_value, version_labels

from .kstatus import kstatus

LABEL_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_valid_ids_are_kept_as_label_values() -> None:
    assert label_value("dental-office-123") == "dental-office-123"


def test_invalid_ids_are_hashed_deterministically() -> None:
    for raw in ["dr.smith@example.com", "a" * 64, "{uuid}", "-leading", "with space", "h-looks-hashed"]:
        value = label_value(raw)
        assert value.startswith("h-") and LABEL_RE.match(value) and len(value) <= 63
        assert value == label_value(raw)
    assert label_value("x@y") != label_value("x@z")


def test_version_labels_mirror_attribution() -> None:
    spec = DeploymentVersionSpec.model_validate(
        {
            "deploymentRef": {"name": "site"},
            "kind": "static",
            "artifact": {"uri": "s3://bkt/a.tar", "sha256": "0" * 64},
            "attribution": {"externalWorkspaceId": "acme-team-123", "externalUserId": "u@acme.io", "createdBy": "user_1"},
        }
    )
    labels = version_labels(spec)
    assert labels[meta.LABEL_DEPLOYMENT] == "site"
    assert labels[meta.LABEL_WORKSPACE] == "acme-team-123"
    assert labels[meta.LABEL_USER] == label_value("u@acme.io")
    assert meta.LABEL_PROJECT not in labels


def test_ulid_shape_and_order() -> None:
    assert re.match(r"^ver_[0-9A-HJKMNP-TV-Z]{26}$", new_version_id())
    assert re.match(r"^dep_[0-9A-HJKMNP-TV-Z]{26}$", new_deployment_id())
    assert ulid(1000, 0) < ulid(1001, 0)
    assert ulid(0, 0) == "0" * 26


def test_transition_time_moves_only_when_status_changes() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    conditions = set_condition(None, type="Ready", status=False, reason="Building", message="", generation=1, now=t0)
    later = set_condition(conditions, type="Ready", status=False, reason="Still", message="", generation=1, now=t0 + timedelta(1))
    assert get_condition(later, "Ready").last_transition_time == t0
    flipped = set_condition(later, type="Ready", status=True, reason="Ready", message="", generation=1, now=t0 + timedelta(2))
    ready = get_condition(flipped, "Ready")
    assert ready.status == ConditionStatus.TRUE and ready.last_transition_time == t0 + timedelta(2)


def test_ready_condition_comes_first() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    conditions = set_condition(None, type="Available", status=True, reason="x", message="", generation=1, now=t0)
    conditions = set_condition(conditions, type="Ready", status=True, reason="x", message="", generation=1, now=t0)
    assert [c.type for c in conditions] == ["Ready", "Available"]


def test_health_sets_the_kstatus_trio_together() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cases = {
        Health.reconciling(Reason.BUILDING, "verifying"): ("False", "True", "False", "InProgress"),
        Health(True, Reason.READY, "promotable"): ("True", "False", "False", "Current"),
        Health.stalled(Reason.CHECKSUM_MISMATCH, "wrong bytes"): ("False", "False", "True", "Failed"),
        Health(True, Reason.NOTHING_PROMOTED, "nothing runs"): ("True", "False", "False", "Current"),
        Health.stalled(Reason.ROLLOUT_REVERTED, "put back"): ("False", "False", "True", "Failed"),
    }
    earlier = health_conditions(None, Health.reconciling(Reason.PENDING, "numbering"), generation=1, now=t0)
    for health, (ready, reconciling, stalled, computed) in cases.items():
        conditions = health_conditions(earlier, health, generation=1, now=t0 + timedelta(1))
        by_type = {c.type: c for c in conditions}
        assert conditions[0].type == "Ready"
        assert (by_type["Ready"].status, by_type["Reconciling"].status, by_type["Stalled"].status) == (
            ready,
            reconciling,
            stalled,
        )
        assert {c.reason for c in conditions} == {health.reason} and {c.message for c in conditions} == {health.message}
        body = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [c.wire() for c in conditions]}}
        assert kstatus(body) == computed, health
