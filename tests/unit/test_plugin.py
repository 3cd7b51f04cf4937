"""The kubectl plugin without a cluster: seed shape, tables, selectors, rollback target,
wait outcomes and exit codes.

Commands run through ``cli.main`` against ``FakeCustomObjects``, a stand-in for
``kubernetes.client.CustomObjectsApi`` that stores objects, applies merge patches and can be
told to raise what the real client raises (``ApiException``, urllib3 errors).
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from miosa_operator.api import meta
from miosa_operator.domain.labels import label_value
from miosa_operator.plugin import cli, commands, output
from miosa_operator.plugin.apiclient import ApiStatus
from miosa_operator.plugin.client import Cluster, default_namespace
from miosa_operator.plugin.errors import ExitCode, PluginError, Request, describe_transport
from miosa_operator.plugin.selection import AttributionFilter, belongs, newest_first, previous_live, version_selector

NS = "acme"
SERVER = "https://k8s.example:6443"
SHA_A, SHA_B = "a" * 64, "b" * 64


def static_body(name: str = "site-v17", number: int | None = 17, state: str = "ready", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": meta.VERSION_KIND,
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": "2026-05-14T18:19:48Z",
            "annotations": {meta.ANNOTATION_PUBLISHED_BY: "system:serviceaccount:acme:ci"},
        },
        "spec": {
            "deploymentRef": {"name": "site"},
            "kind": "static",
            "source": {"sandboxId": "sbx_1", "buildId": "bld_1", "sha256": SHA_A},
            "artifact": {"uri": "s3://miosa-uploads/site.tar.gz", "sha256": SHA_A, "entrypoint": "index.html"},
            "buildLog": {"uri": "s3://miosa-logs/builds/bld_1/log.txt"},
            "attribution": {
                "createdBy": "user_1",
                "externalWorkspaceId": "dental-office-123",
                "externalUserId": "dr-smith-456",
                "externalProjectId": "landing-page-789",
            },
            "metadata": {"commit": "abc123"},
        },
        "status": {
            "id": "ver_01HZZZZZZZZZZZZZZZZZZZZZZZ",
            "deploymentId": "dep_01HZZZZZZZZZZZZZZZZZZZZZZZ",
            "tenantId": NS,
            "versionNumber": number,
            "state": state,
            "artifactUri": "s3://miosa-releases/dep_1/ver_1/dist.tar.zst",
            "artifactSha256": SHA_B,
            "artifactManifest": {"files": 42, "totalBytes": 184320, "entrypoint": "index.html"},
            "buildLogUri": "s3://miosa-releases/dep_1/ver_1/build.log",
            "readyAt": "2026-05-14T18:19:55.123456Z",
            "promotedAt": "2026-05-14T18:20:00+00:00",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-05-14T18:19:55Z"}],
            **status,
        },
    }


def dynamic_body() -> dict[str, Any]:
    return {
        "metadata": {"name": "app-v1", "namespace": NS, "creationTimestamp": "2026-05-14T10:00:00Z"},
        "spec": {
            "deploymentRef": {"name": "app"},
            "kind": "dynamic",
            "runtime": {
                "image": "registry.example/app:1.0",
                "command": ["node", "server.js"],
                "args": ["--port", "8080"],
                "port": 8080,
                "healthCheckPath": "/healthz",
            },
        },
        "status": {
            "id": "ver_01HAAAAAAAAAAAAAAAAAAAAAAA",
            "deploymentId": "dep_01HAAAAAAAAAAAAAAAAAAAAAAA",
            "tenantId": NS,
            "versionNumber": 1,
            "state": "failed",
            "buildLogUri": "s3://miosa-releases/dep_2/ver_2/build.log",
            "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-05-14T10:01:30Z"},
                {"type": "HealthChecked", "status": "False", "lastTransitionTime": "2026-05-14T10:01:31Z"},
            ],
        },
    }


# ---------------------------------------------------------------------------- seed shape


def test_static_version_in_seed_shape_field_by_field() -> None:
    assert output.seed_version(static_body()) == {
        "id": "ver_01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "deployment_id": "dep_01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "tenant_id": NS,
        "created_by": "user_1",
        "external_workspace_id": "dental-office-123",
        "external_user_id": "dr-smith-456",
        "external_project_id": "landing-page-789",
        "source_sandbox_id": "sbx_1",
        "build_id": "bld_1",
        "version_number": 17,
        "kind": "static",
        "state": "ready",
        "artifact_uri": "s3://miosa-releases/dep_1/ver_1/dist.tar.zst",
        "artifact_manifest": {"files": 42, "total_bytes": 184320, "entrypoint": "index.html"},
        "artifact_sha256": SHA_B,
        "runtime_image": None,
        "runtime_command": None,
        "runtime_port": None,
        "health_check_path": None,
        "build_log_uri": "s3://miosa-releases/dep_1/ver_1/build.log",
        "metadata": {"commit": "abc123"},
        "promoted_at": "2026-05-14T18:20:00Z",
        "archived_at": None,
        "created_at": "2026-05-14T18:19:48Z",
        "updated_at": "2026-05-14T18:20:00Z",
        "name": "site-v17",
        "runtime_args": None,
        "artifacts_collected_at": None,
        # Claimed (spec.attribution.createdBy) and authenticated (recorded by the API server).
        "published_by": "system:serviceaccount:acme:ci",
    }


def test_seed_keys_come_first_in_the_seeds_order() -> None:
    seed_keys = [
        "id",
        "deployment_id",
        "tenant_id",
        "created_by",
        "external_workspace_id",
        "external_user_id",
        "external_project_id",
        "source_sandbox_id",
        "build_id",
        "version_number",
        "kind",
        "state",
        "artifact_uri",
        "artifact_manifest",
        "artifact_sha256",
        "runtime_image",
        "runtime_command",
        "runtime_port",
        "health_check_path",
        "build_log_uri",
        "metadata",
        "promoted_at",
        "archived_at",
        "created_at",
        "updated_at",
    ]
    assert list(output.seed_version(static_body()))[: len(seed_keys)] == seed_keys


def test_dynamic_version_in_seed_shape_field_by_field() -> None:
    version = output.seed_version(dynamic_body())
    assert version == {
        "id": "ver_01HAAAAAAAAAAAAAAAAAAAAAAA",
        "deployment_id": "dep_01HAAAAAAAAAAAAAAAAAAAAAAA",
        "tenant_id": NS,
        "created_by": None,
        "external_workspace_id": None,
        "external_user_id": None,
        "external_project_id": None,
        "source_sandbox_id": None,
        "build_id": None,
        "version_number": 1,
        "kind": "dynamic",
        "state": "failed",
        "artifact_uri": None,
        "artifact_manifest": None,
        "artifact_sha256": None,
        "runtime_image": "registry.example/app:1.0",
        "runtime_command": ["node", "server.js"],
        "runtime_port": 8080,
        "health_check_path": "/healthz",
        "build_log_uri": "s3://miosa-releases/dep_2/ver_2/build.log",
        "metadata": {},
        "promoted_at": None,
        "archived_at": None,
        "created_at": "2026-05-14T10:00:00Z",
        "updated_at": "2026-05-14T10:01:31Z",  # the latest condition transition
        "name": "app-v1",
        "runtime_args": ["--port", "8080"],
        "artifacts_collected_at": None,
        "published_by": None,  # created before the admission policy recorded publishers
    }


def test_a_version_the_operator_has_not_seen_yet() -> None:
    body = {
        "metadata": {"name": "new", "namespace": NS, "creationTimestamp": "2026-05-14T10:00:00Z"},
        "spec": static_body()["spec"],
    }
    version = output.seed_version(body)
    assert (version["id"], version["state"], version["version_number"]) == (None, None, None)
    assert version["tenant_id"] == NS  # the tenant is the namespace
    assert version["build_log_uri"] == "s3://miosa-logs/builds/bld_1/log.txt"  # the external build's log
    assert version["updated_at"] == version["created_at"] == "2026-05-14T10:00:00Z"


def test_timestamps_are_rfc3339_utc_with_z() -> None:
    assert output.rfc3339("2026-05-14T20:20:00.987+02:00") == "2026-05-14T18:20:00Z"
    assert output.rfc3339("2026-05-14T18:20:00") == "2026-05-14T18:20:00Z"
    assert output.rfc3339(None) is None and output.rfc3339("") is None


# ---------------------------------------------------------------------------- rendering

NOW = datetime(2026, 5, 14, 18, 30, 0, tzinfo=UTC)


def test_age_is_kubectl_style() -> None:
    assert [output.age(f"2026-05-14T18:{m:02d}:{s:02d}Z", NOW) for m, s in ((29, 15), (25, 0))] == ["45s", "5m"]
    assert output.age("2026-05-13T18:30:00Z", NOW) == "24h"
    assert output.age("2026-05-01T18:30:00Z", NOW) == "13d"
    assert output.age(None, NOW) == "-"


def test_versions_table_marks_the_live_version() -> None:
    v17 = output.seed_version(static_body())
    v18 = output.seed_version(static_body("site-v18", 18, promotedAt=None))
    text = output.versions_table([v18, v17], live="site-v17", now=NOW)
    assert text.splitlines() == [
        "NUMBER   NAME       STATE          KIND     WORKSPACE           PROMOTED   AGE",
        "18       site-v18   ready          static   dental-office-123   -          10m",
        "17       site-v17   ready (live)   static   dental-office-123   10m ago    10m",
    ]


def test_history_newest_first_as_table_and_rows() -> None:
    status = {
        "history": [
            {"version": "site-v1", "versionNumber": 1, "action": "promote", "actor": "alice", "time": "2026-05-14T18:00:00Z"},
            {"version": "site-v2", "versionNumber": 2, "action": "promote", "actor": "bob", "time": "2026-05-14T18:10:00Z"},
            {
                "version": "site-v1",
                "versionNumber": 1,
                "action": "rollback",
                "actor": "alice",
                "time": "2026-05-14T18:20:00.5Z",
                "reason": "v2 broke the form",
            },
        ]
    }
    rows = output.history_entries(status)
    assert rows[0] == {
        "time": "2026-05-14T18:20:00Z",
        "action": "rollback",
        "version": "site-v1",
        "number": 1,
        "actor": "alice",
        "reason": "v2 broke the form",
    }
    assert [r["action"] for r in rows] == ["rollback", "promote", "promote"]
    assert output.history_table(rows).splitlines() == [
        "TIME                   ACTION     VERSION   NUMBER   ACTOR   REASON",
        "2026-05-14T18:20:00Z   rollback   site-v1   1        alice   v2 broke the form",
        "2026-05-14T18:10:00Z   promote    site-v2   2        bob     -",
        "2026-05-14T18:00:00Z   promote    site-v1   1        alice   -",
    ]


def test_version_details_one_field_per_line() -> None:
    text = output.version_details(output.seed_version(static_body()), live=True)
    assert "state:                   ready (live)" in text.splitlines()
    assert 'artifact_manifest:       {"files": 42, "total_bytes": 184320, "entrypoint": "index.html"}' in text.splitlines()


# ---------------------------------------------------------------------------- selection


def test_selector_hashes_ids_that_are_not_label_values() -> None:
    assert version_selector("site") == "deploy.miosa.io/deployment=site"
    selector = version_selector("site", AttributionFilter(workspace="team@acme.io", project="p1"))
    assert selector == (
        f"deploy.miosa.io/deployment=site,deploy.miosa.io/external-workspace-id={label_value('team@acme.io')},"
        "deploy.miosa.io/external-project-id=p1"
    )


def test_belongs_compares_the_real_ids_in_spec() -> None:
    body = static_body()
    assert belongs(body, "site", AttributionFilter(workspace="dental-office-123", user="dr-smith-456"))
    assert not belongs(body, "site", AttributionFilter(workspace="other"))  # e.g. a hash collision
    assert not belongs(body, "site2")


def test_newest_first_by_version_number_unnumbered_on_top() -> None:
    bodies = [static_body("a", 2), static_body("b", 10), static_body("c", None), static_body("d", 1)]
    assert [b["metadata"]["name"] for b in newest_first(bodies)] == ["c", "b", "a", "d"]


def _history(*names: str) -> list[dict[str, Any]]:
    return [{"version": n, "action": "promote"} for n in names]


def test_rollback_target_is_the_previous_live_version() -> None:
    versions = {n: static_body(n) for n in ("v1", "v2", "v3")}
    assert previous_live(_history("v1", "v2", "v3"), "v3", versions) == "v2"
    # after a rollback to v1 the previous live is v3 (newest entry that is not live)
    assert previous_live(_history("v1", "v2", "v3", "v1"), "v1", versions) == "v3"
    assert previous_live(_history("v1"), "v1", versions) is None
    assert previous_live([], None, versions) is None
    assert previous_live(_history("v1", "v2"), None, versions) == "v2"  # nothing live: the last one


def test_rollback_target_skips_deleted_collected_and_unbootable_versions() -> None:
    versions = {
        "v1": static_body("v1", state="archived"),
        "v2": static_body("v2", state="archived", artifactsCollectedAt="2026-06-20T00:00:00Z"),
        "v4": static_body("v4"),
    }
    # v3 was deleted, v2's artifacts were collected: v1 (archived, still bootable) it is
    assert previous_live(_history("v1", "v2", "v3", "v4"), "v4", versions) == "v1"
    assert previous_live(_history("v1"), "v4", {"v1": static_body("v1", state="failed")}) is None


# ---------------------------------------------------------------------------- errors


def api_exception(status: int, message: str | None = None, reason: str = "") -> ApiStatus:
    body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status}) if message else ""
    return ApiStatus(status, reason, body)


REQUEST = Request("patch", meta.DEPLOYMENT_PLURAL, NS, "site")


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (api_exception(404, "not found"), ExitCode.NOT_FOUND, 'deployment "site" not found in namespace "acme"'),
        (
            api_exception(403, 'deployments.deploy.miosa.io "site" is forbidden: User "bob" cannot patch resource'),
            ExitCode.FORBIDDEN,
            'forbidden: you may not patch deployments.deploy.miosa.io "site" in namespace "acme" '
            "(needs ClusterRole miosa-deployments-write",
        ),
        (
            api_exception(
                422,
                'admission webhook "promotion.deploy.miosa.io" denied the request: promotedVersion '
                "'site-bad' is failed; only ready or archived versions can be promoted",
            ),
            ExitCode.REFUSED,
            "'site-bad' is failed; only ready or archived versions can be promoted",
        ),
        (api_exception(401, reason="Unauthorized"), ExitCode.FORBIDDEN, f"unauthorized: {SERVER} rejected"),
        (api_exception(500, reason="Internal Server Error"), ExitCode.REFUSED, "500 Internal Server Error"),
    ],
)
def test_api_exceptions_map_to_exit_codes(exc: ApiStatus, code: ExitCode, text: str) -> None:
    error = _call_raising(exc)
    assert error.code == code and text in str(error)
    assert '"kind"' not in str(error)  # the Status message, never the raw JSON body


def test_forbidden_read_names_the_read_role() -> None:
    cluster = _cluster(FakeCustomObjects(fail=api_exception(403, "no")))
    with pytest.raises(PluginError) as caught:
        cluster.list_versions("x=y")
    assert caught.value.code == ExitCode.FORBIDDEN
    assert 'you may not list deploymentversions.deploy.miosa.io in namespace "acme"' in str(caught.value)
    assert "miosa-deployments-read" in str(caught.value)


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (TimeoutError("timed out"), "timed out"),
        (TimeoutError("The read operation timed out"), "timed out"),
        (socket.gaierror(-2, "Name or service not known"), "cannot resolve the server's host name"),
        (OSError(113, "No route to host"), "[Errno 113] No route to host"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS error: "),
    ],
)
def test_transport_errors_exit_5_naming_the_server(exc: Exception, phrase: str) -> None:
    error = _call_raising(exc)
    assert error.code == ExitCode.UNREACHABLE
    assert str(error).startswith(f"cannot reach the Kubernetes API server at {SERVER}: {phrase}")
    assert "object at 0x" not in describe_transport(exc)


def _call_raising(exc: Exception) -> PluginError:
    def boom(*_: Any, **__: Any) -> None:
        raise exc

    with pytest.raises(PluginError) as caught:
        _cluster(FakeCustomObjects())._call(REQUEST, boom)
    return caught.value


# ---------------------------------------------------------------------------- commands via main


class FakeCustomObjects:
    """The API server in memory, at the level of the plugin's HTTP client: GET, LIST (label
    and field selectors), JSON merge PATCH of our objects; calls recorded by verb."""

    server = SERVER

    def __init__(self, objects: list[dict[str, Any]] = (), fail: Exception | None = None) -> None:  # type: ignore[assignment]
        self.objects = {(self._plural(o), o["metadata"]["name"]): copy.deepcopy(o) for o in objects}
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []
        self.patch_error: Exception | None = None

    @staticmethod
    def _plural(obj: dict[str, Any]) -> str:
        return meta.DEPLOYMENT_PLURAL if obj.get("kind") == meta.DEPLOYMENT_KIND else meta.VERSION_PLURAL

    def _check(self, call: str, detail: Any) -> None:
        self.calls.append((call, detail))
        if self.fail is not None:
            raise self.fail

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None,
                content_type: str = "application/json") -> Any:  # fmt: skip
        prefix = f"/apis/{meta.GROUP}/{meta.VERSION}/namespaces/{NS}/"
        assert path.startswith(prefix), path
        plural, _, name = path[len(prefix) :].partition("/")
        name = unquote(name)
        if method == "GET" and not name:
            query = query or {}
            return self._list(plural, query.get("labelSelector", ""), query.get("fieldSelector", ""))
        if method == "GET":
            self._check("get", (plural, name))
            if (plural, name) not in self.objects:
                raise api_exception(404, f'{plural}.{meta.GROUP} "{name}" not found')
            return copy.deepcopy(self.objects[(plural, name)])
        assert method == "PATCH" and content_type == "application/merge-patch+json"
        self._check("patch", (name, body))
        if self.patch_error is not None:
            raise self.patch_error
        if (plural, name) not in self.objects:
            raise api_exception(404, "not found")
        obj = self.objects[(plural, name)]
        _merge(obj, body)
        if "spec" in body:
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        return copy.deepcopy(obj)

    def _list(self, plural: str, label_selector: str, field_selector: str) -> Any:
        self._check("list", (label_selector, field_selector))
        labels = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        fields = dict(term.split("=", 1) for term in field_selector.split(",") if term)
        items = [
            copy.deepcopy(o)
            for (p, _), o in self.objects.items()
            if p == plural
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            and all((o.get("status") or {}).get(k.removeprefix("status.")) == v for k, v in fields.items())
        ]
        return {"items": items}


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            _merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


def _cluster(custom: FakeCustomObjects) -> Cluster:
    return Cluster(custom, NS)  # type: ignore[arg-type]


def labelled(body: dict[str, Any]) -> dict[str, Any]:
    spec = body["spec"]
    labels = {meta.LABEL_DEPLOYMENT: spec["deploymentRef"]["name"]}
    workspace = (spec.get("attribution") or {}).get("externalWorkspaceId")
    if workspace:
        labels[meta.LABEL_WORKSPACE] = label_value(workspace)
    body["metadata"]["labels"] = labels
    return body


def deployment(policy: str = "Manual", live: str | None = "v3", history: tuple[str, ...] = ("v1", "v2", "v3")) -> dict[str, Any]:
    return {
        "kind": meta.DEPLOYMENT_KIND,
        "metadata": {"name": "site", "namespace": NS, "generation": 4},
        "spec": {"kind": "static", "promotionPolicy": policy, "promotedVersion": live},
        "status": {"liveVersion": live, "history": _history(*history)},
    }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    return fake_cluster(monkeypatch)


def fake_cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    """Site with versions v1..v3 (v3 live); every ``Cluster.connect`` gets it."""
    custom = FakeCustomObjects(
        [deployment(), *(labelled(static_body(f"v{i}", i, state="archived" if i < 3 else "ready")) for i in (1, 2, 3))]
    )
    monkeypatch.setattr(Cluster, "connect", classmethod(lambda cls, *a: _cluster(custom)))
    return custom


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_versions_list_json_is_one_list_call_newest_first(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "versions", "list", "site", "-o", "json")
    assert code == 0
    assert [v["name"] for v in json.loads(out)] == ["v3", "v2", "v1"]
    assert fake.calls == [("list", ("deploy.miosa.io/deployment=site", ""))]


def test_versions_list_state_filter_and_yaml(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "versions", "list", "site", "--state", "archived", "-o", "yaml")
    assert code == 0 and [v["name"] for v in yaml.safe_load(out)] == ["v2", "v1"]
    assert fake.calls[0] == ("list", ("deploy.miosa.io/deployment=site", "status.state=archived"))


def test_versions_list_of_an_unknown_deployment_exits_3(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "versions", "list", "nope")
    assert code == 3 and err == 'error: deployment "nope" not found in namespace "acme"\n'


def test_versions_show_unknown_exits_3(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "versions", "show", "v9", "-o", "json")
    assert code == 3 and err == 'error: deploymentversion "v9" not found in namespace "acme"\n'


def test_promote_patches_spec_and_clears_a_stale_reason(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "promote", "site", "v2")
    assert code == 0 and out == "promotion of v2 requested\n"
    patch = fake.calls[-1]
    assert patch == (
        "patch",
        ("site", {"metadata": {"annotations": {meta.ANNOTATION_CHANGE_CAUSE: None}}, "spec": {"promotedVersion": "v2"}}),
    )


def test_promote_of_an_unknown_version_exits_3_without_patching(
    fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "promote", "site", "v9")
    assert code == 3 and 'deploymentversion "v9" not found' in err
    assert all(call != "patch" for call, _ in fake.calls)


def test_webhook_denial_exits_1_with_its_message(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    denial = "admission webhook \"promotion.deploy.miosa.io\" denied the request: promotedVersion 'v1' is failed"
    fake.patch_error = api_exception(422, denial)
    code, _, err = run(capsys, "promote", "site", "v1")
    assert code == 1 and err == f"error: {denial}\n"


def test_rollback_defaults_to_the_previous_live_version(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "rollback", "site", "--reason", "v3 broke it")
    assert code == 0 and out == "rollback of site to v2 requested\n" and err == ""
    assert fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["spec"]["promotedVersion"] == "v2"
    assert fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["metadata"]["annotations"] == {
        meta.ANNOTATION_CHANGE_CAUSE: "v3 broke it"
    }


def test_rollback_under_auto_switches_to_manual(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["spec"]["promotionPolicy"] = "Auto"
    code, _, err = run(capsys, "rollback", "site", "--to", "v1")
    assert code == 0 and "from promotionPolicy Auto to Manual" in err
    spec = fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["spec"]
    assert (spec["promotedVersion"], spec["promotionPolicy"]) == ("v1", "Manual")


def test_rollback_without_a_previous_version_exits_1(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["status"]["history"] = _history("v3")
    code, _, err = run(capsys, "rollback", "site")
    assert code == 1 and "no previous live version to roll back to" in err


def test_global_flags_work_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.build_parser().parse_args(["history", "site", "-n", "tenant", "--context", "ctx"])
    assert (args.namespace, args.context, args.kubeconfig, args.request_timeout) == ("tenant", "ctx", None, 30.0)
    args = cli.build_parser().parse_args(["-n", "left", "versions", "list", "site"])
    assert args.namespace == "left"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["versions", "list", "site", "--state", "bogus"])
    assert caught.value.code == 2


def test_namespace_defaults_to_the_contexts_namespace(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": SERVER}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "tenant-a"}},
                    {"name": "b", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "a",
            }
        )
    )
    assert default_namespace(str(kubeconfig), None) == "tenant-a"
    assert default_namespace(str(kubeconfig), "b") == "default"


# ---------------------------------------------------------------------------- waiting


def _status(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "site"}, "status": status}


def test_rollout_outcome() -> None:
    assert commands.rollout_outcome(_status(liveVersion="v2"), "v2", 5).done
    assert commands.rollout_outcome(_status(liveVersion="v1", rollout={"version": "v2"}), "v2", 5) is None
    assert commands.rollout_outcome(_status(liveVersion="v1", observedGeneration=4), "v2", 5) is None  # not seen yet

    def stalled(reason: str, message: str, generation: int = 5) -> dict[str, object]:
        condition = {"type": "Stalled", "status": "True", "reason": reason, "message": message, "observedGeneration": generation}
        return _status(liveVersion="v1", observedGeneration=5, conditions=[condition])

    reverted = stalled("RolloutReverted", "v2 did not become available")
    assert commands.rollout_outcome(reverted, "v2", 5) == commands.Outcome(False, "RolloutReverted: v2 did not become available")
    refused = stalled("InvalidPromotion", "no")
    assert commands.rollout_outcome(refused, "v2", 5) == commands.Outcome(False, "InvalidPromotion: no")
    assert commands.rollout_outcome(stalled("VersionFailed", "old news", generation=4), "v2", 5) is None
    waiting = _status(observedGeneration=5, conditions=[{"type": "Reconciling", "status": "True", "reason": "WaitingForVersion"}])
    assert commands.rollout_outcome(waiting, "v2", 5) is None


def test_wait_polls_until_live_and_times_out() -> None:
    bodies = iter([_status(liveVersion="v1", rollout={"version": "v2"}), _status(liveVersion="v2")])
    ticks = iter(range(100))
    body = commands.wait_for_rollout(lambda: next(bodies), "v2", 1, 10, sleep=lambda _: None, clock=lambda: next(ticks))
    assert body["status"]["liveVersion"] == "v2"
    stuck = _status(liveVersion="v1", conditions=[{"type": "Ready", "message": "waiting for 2 available replicas"}])
    ticks = iter(range(100))
    with pytest.raises(PluginError) as caught:
        commands.wait_for_rollout(lambda: stuck, "v2", 1, 3, sleep=lambda _: None, clock=lambda: next(ticks))
    assert caught.value.code == ExitCode.IN_PROGRESS
    assert str(caught.value) == "timed out after 3s waiting for v2 to go live (waiting for 2 available replicas)"


def test_completed_message_names_action_and_actor() -> None:
    body = _status(liveVersion="v1", liveVersionNumber=1, history=[{"version": "v1", "action": "rollback", "actor": "alice"}])
    assert commands.completed_message(body, "v1") == "v1 (#1) is live on deployment site (rollback by alice)"


# ---------------------------------------------------------------------------- logs


def test_logs_prints_the_build_log_through_the_store(
    fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MIOSA_FILE_ROOT", "MIOSA_S3_ENDPOINT", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "build.log"
    log.write_text("2026-05-14T18:19:48.123Z  ingest started\n2026-05-14T18:19:49.000Z  ready\n")
    fake.objects[(meta.VERSION_PLURAL, "v1")]["status"]["buildLogUri"] = f"file://{log}"
    fake.objects[(meta.VERSION_PLURAL, "v1")]["spec"].pop("buildLog")
    code, out, _ = run(capsys, "logs", "v1")
    assert code == 0 and out == log.read_text()

    fake.objects[(meta.VERSION_PLURAL, "v2")]["status"]["buildLogUri"] = f"file://{tmp_path}/gone.log"
    code, _, err = run(capsys, "logs", "v2")
    assert code == 3 and f"build log file://{tmp_path}/gone.log not found" in err


def test_logs_of_a_version_without_a_log_exits_1(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    body = fake.objects[(meta.VERSION_PLURAL, "v3")]
    body["status"] = {"state": "building"}
    body["spec"].pop("buildLog")
    code, _, err = run(capsys, "logs", "v3")
    assert code == 1 and err == 'error: deploymentversion "v3" has no build log yet (state: building)\n'


def test_logs_shows_an_external_build_log_beside_the_operators(
    fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MIOSA_FILE_ROOT", "MIOSA_S3_ENDPOINT", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    own, external = tmp_path / "build.log", tmp_path / "ci.log"
    own.write_text("2026-05-14T18:19:48.123Z  health gate passed\n")
    external.write_text("step 1/3 npm ci\n")
    body = fake.objects[(meta.VERSION_PLURAL, "v1")]
    body["status"]["buildLogUri"], body["spec"]["buildLog"] = f"file://{own}", {"uri": f"file://{external}"}
    code, out, _ = run(capsys, "logs", "v1")
    assert code == 0
    assert out == f"{own.read_text()}\n==> external build log (spec.buildLog.uri): file://{external} <==\n{external.read_text()}"
    code, out, _ = run(capsys, "logs", "v1", "-o", "json")
    data = json.loads(out)
    assert (data["build_log_uri"], data["external_build_log_uri"], data["log"]) == (
        f"file://{own}",
        f"file://{external}",
        own.read_text(),
    )
    code, out, _ = run(capsys, "logs", "v1", "-o", "jsonpath={.external_build_log_uri}")
    assert out == f"file://{external}"
    # Only the external log, and it cannot be read: that is the error.
    body["status"].pop("buildLogUri")
    external.unlink()
    code, _, err = run(capsys, "logs", "v1")
    assert code == 3 and "not found" in err


def test_writes_name_a_field_manager_gitops_tools_leave_alone() -> None:
    """Flux takes over (and then prunes) fields of any manager whose name starts with
    "kubectl"; the plugin's default manager would be "kubectl-miosa" (its User-Agent)."""
    from miosa_operator.plugin import apiclient

    sent: list[tuple[str, dict[str, str] | None]] = []

    class Recording(apiclient.ApiClient):
        def _send(self, method, path, query, body, content_type, timeout):  # type: ignore[no-untyped-def]
            sent.append((method, query))
            raise ConnectionError("recorded")

    client = Recording.__new__(Recording)
    client.timeout = 1.0
    for method in ("GET", "PATCH", "POST"):
        with pytest.raises(ConnectionError):
            client.request(method, "/x", {"a": "b"})
    assert sent == [
        ("GET", {"a": "b"}),
        ("PATCH", {"a": "b", "fieldManager": "miosa-plugin"}),
        ("POST", {"a": "b", "fieldManager": "miosa-plugin"}),
    ]
    assert not apiclient.FIELD_MANAGER.startswith("kubectl")
