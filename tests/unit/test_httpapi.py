"""The HTTP API without a cluster: pure decisions, and the app over an in-memory API server.

``FakeKube`` answers the few calls the API makes from a dict of objects: TokenReview from a
token table, SubjectAccessReview from a (user, namespace, verb, plural) table, and LISTs
with the label (``=``, ``>``, ``<``) and field selectors the API sends, so paging, tenant
isolation and the error contract are exercised through real HTTP requests (TestClient).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from miosa_operator.api import meta
from miosa_operator.domain.labels import label_value
from miosa_operator.httpapi import uploads
from miosa_operator.httpapi.app import asgi, create_app
from miosa_operator.httpapi.auth import TtlCache, bearer_token, caller_from_review
from miosa_operator.httpapi.decisions import previous_live_candidates, promotion_verdict
from miosa_operator.httpapi.errors import ApiError, Code
from miosa_operator.httpapi.kube import KubeError
from miosa_operator.httpapi.paging import BadCursor, PagePlanner, decode_cursor, encode_cursor, window_selector
from miosa_operator.settings import Settings

Obj = dict[str, Any]
DEP_A = "dep_01HAAAAAAAAAAAAAAAAAAAAAAA"
DEP_B = "dep_01HBBBBBBBBBBBBBBBBBBBBBBB"


def ver_id(n: int, ns: str = "a") -> str:
    return f"ver_01H{ns.upper()}{n:022d}"


# ---------------------------------------------------------------------------- paging


def test_cursor_round_trips_and_rejects_what_it_did_not_issue() -> None:
    assert decode_cursor(encode_cursor(17)) == 17
    for bad in ("", "x" * 65, "!!!", encode_cursor(17)[:-1] + "$", "djE6YWJj", "djE6MQ", "djI6MTc"):  # v1:abc, v1:1, v2:17
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def test_window_selector_uses_integer_comparisons() -> None:
    assert window_selector("a=b", 11, 21) == "a=b,deploy.miosa.io/version-number>10,deploy.miosa.io/version-number<21"


def numbered(n: int, **labels: str) -> Obj:
    return {"metadata": {"name": f"v{n}", "labels": labels}, "status": {"versionNumber": n}}


def run_pages(total: int, limit: int, keep: Any = lambda n: True) -> tuple[list[list[int]], int]:
    """All pages over versions 1..total where ``keep(n)`` says which match; and LIST calls."""
    pages, calls, before = [], 0, None
    while True:
        planner = PagePlanner(top=before if before is not None else total + 1, limit=limit)
        while (window := planner.window()) is not None:
            calls += 1
            low, high = window
            planner.add(numbered(n) for n in range(low, high) if keep(n))
        page, before = planner.page()
        pages.append([item["status"]["versionNumber"] for item in page])
        if before is None:
            return pages, calls


def test_unfiltered_pages_are_one_list_each_newest_first_without_gaps() -> None:
    pages, calls = run_pages(250, 50)
    assert [p[0] for p in pages] == [250, 200, 150, 100, 50] and calls == 5
    flat = [n for page in pages for n in page]
    assert flat == list(range(250, 0, -1))


def test_sparse_filters_widen_the_window_and_still_cover_everything() -> None:
    pages, calls = run_pages(10_000, 50, keep=lambda n: n % 200 == 7)  # 50 of 10,000
    flat = [n for page in pages for n in page]
    assert flat == sorted((n for n in range(1, 10_001) if n % 200 == 7), reverse=True)
    assert calls <= 8


def test_no_versions_is_one_empty_page() -> None:
    planner = PagePlanner(top=1, limit=20)
    assert planner.window() is None and planner.page() == ([], None)


# ---------------------------------------------------------------------------- promotion decisions


def deployment(policy: str = "Manual", kind: str = "static", **status: Any) -> Obj:
    return {
        "metadata": {"name": "site", "namespace": "a", "resourceVersion": "7"},
        "spec": {"kind": kind, "promotionPolicy": policy},
        "status": status,
    }


def version(name: str = "site-v2", state: str | None = "ready", kind: str = "static", **status: Any) -> Obj:
    return {
        "metadata": {"name": name},
        "spec": {"kind": kind, "deploymentRef": {"name": "site"}},
        "status": {"state": state, **status},
    }


def refusal(dep: Obj, ver: Obj, rollback: bool = False) -> tuple[int, Code]:
    with pytest.raises(ApiError) as caught:
        promotion_verdict(dep, ver, rollback=rollback)
    return caught.value.status, caught.value.code


def test_promotion_answers() -> None:
    assert promotion_verdict(deployment(), version(), rollback=False).status == 200
    assert promotion_verdict(deployment(), version(state="archived"), rollback=False).status == 200
    assert promotion_verdict(deployment(), version(state="building"), rollback=False).status == 202
    assert promotion_verdict(deployment(), version(state=None), rollback=False).status == 202
    assert refusal(deployment(), version(state="failed")) == (422, Code.NOT_PROMOTABLE)
    assert refusal(deployment(), version(artifactsCollectedAt="2026-01-01T00:00:00Z")) == (422, Code.NOT_PROMOTABLE)
    assert refusal(deployment(kind="dynamic"), version()) == (422, Code.NOT_PROMOTABLE)
    assert refusal(deployment("Auto"), version()) == (409, Code.AUTO_PROMOTION)
    assert refusal(deployment(rollout={"version": "site-v3"}), version()) == (409, Code.PROMOTION_IN_PROGRESS)
    # A failed version is refused as not promotable even under Auto: the version decides first.
    assert refusal(deployment("Auto"), version(state="failed")) == (422, Code.NOT_PROMOTABLE)


def test_rollback_under_auto_switches_to_manual() -> None:
    verdict = promotion_verdict(deployment("Auto"), version(), rollback=True)
    assert verdict.status == 200 and verdict.switch_to_manual


def test_previous_live_candidates_newest_first_without_the_live_one() -> None:
    history = [{"version": "v1"}, {"version": "v2"}, {"version": "v1"}, {"version": "v3"}]
    assert previous_live_candidates(deployment(liveVersion="v3", history=history)) == ["v1", "v2"]


# ---------------------------------------------------------------------------- authentication pieces


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc.def-ghi_~+/==") == "abc.def-ghi_~+/=="
    for bad in (None, "", "Basic abc", "Bearer", "Bearer a b", "Bearer \x00", "bearer" + " x" * 9000):
        with pytest.raises(ApiError) as caught:
            bearer_token(bad)
        assert caught.value.status == 401


def test_ttl_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache: TtlCache[int] = TtlCache(10, 3, clock=lambda: now[0])
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == 4
    now[0] = 11
    assert cache.get(4) is None


def test_caller_from_review() -> None:
    review = {"status": {"authenticated": True, "user": {"username": "system:serviceaccount:a:ci", "uid": "u", "groups": ["g"]}}}
    caller = caller_from_review(review, "tok")
    assert caller is not None and caller.username == "system:serviceaccount:a:ci" and caller.groups == ("g",)
    assert "tok" not in repr(caller)
    assert caller_from_review({"status": {"authenticated": False}}, "tok") is None


# ---------------------------------------------------------------------------- uploads


async def chunks_of(*parts: bytes, delay: float = 0) -> AsyncIterator[bytes]:
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_spool_hashes_and_detects_the_format(tmp_path: Any) -> None:
    bundle = tar_gz({"index.html": b"hi"})
    spooled = asyncio.run(uploads.spool(chunks_of(bundle[:10], bundle[10:]), str(tmp_path), 10_000))
    assert spooled.sha256 == hashlib.sha256(bundle).hexdigest() and spooled.format == "tar.gz" and spooled.size == len(bundle)


@pytest.mark.parametrize(
    ("body", "limit", "status"),
    [([b"x" * 600], 100, 413), ([], 100, 400), ([b"not an archive" * 100], 10_000, 415), ([gzip.compress(b"")], 10_000, 200)],
)
def test_spool_refusals_leave_no_file(tmp_path: Any, body: list[bytes], limit: int, status: int) -> None:
    try:
        asyncio.run(uploads.spool(chunks_of(*body), str(tmp_path), limit))
        outcome = 200
    except ApiError as exc:
        outcome = exc.status
    assert outcome == status
    if status != 200:
        assert list(tmp_path.iterdir()) == []


def test_a_stalled_body_is_dropped() -> None:
    async def read() -> None:
        async for _ in uploads.with_idle_timeout(chunks_of(b"a", b"b", delay=0.3), 0.1):
            pass

    with pytest.raises(ApiError) as caught:
        asyncio.run(read())
    assert caught.value.status == 408


def test_upload_slots_cap_overall_and_per_tenant() -> None:
    slots = uploads.UploadSlots(total=2, per_tenant=1)
    with slots.take("a"):
        with pytest.raises(ApiError), slots.take("a"):
            pass
        with slots.take("b"), pytest.raises(ApiError), slots.take("c"):
            pass
    with slots.take("a"):
        pass


def test_upload_uri_is_under_the_tenants_prefix() -> None:
    assert (
        uploads.upload_uri("s3://miosa-uploads", "acme", DEP_A, "ab" * 32, "tar.zst")
        == f"s3://miosa-uploads/acme/{DEP_A}/{'ab' * 32}.tar.zst"
    )


# ---------------------------------------------------------------------------- the app over a fake API server


class FakeKube:
    """An in-memory API server for the calls ``httpapi.kube.Kube`` makes."""

    def __init__(self) -> None:
        self.tokens = {"tok-a-read": "alice", "tok-a-write": "ci-a", "tok-b": "bob"}
        self.grants: set[tuple[str, str, str, str]] = set()
        for user, ns, write in (("alice", "a", False), ("ci-a", "a", True), ("bob", "b", True)):
            self.grants |= {(user, ns, "get", "deployments"), (user, ns, "list", "deploymentversions")}
            if write:
                self.grants |= {(user, ns, "patch", "deployments"), (user, ns, "create", "deploymentversions")}
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.patches: list[tuple[str, Obj]] = []
        self.created: list[tuple[str, Obj]] = []
        self.reviews = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def add(self, plural: str, body: Obj) -> None:
        self.objects[(plural, body["metadata"]["namespace"], body["metadata"]["name"])] = body

    def _user(self, token: str) -> str:
        if token not in self.tokens:
            raise KubeError(401, "Unauthorized")
        return self.tokens[token]

    async def token_review(self, token: str) -> Obj:
        self.reviews += 1
        user = self.tokens.get(token)
        return {"status": {"authenticated": bool(user), "user": {"username": user or ""}}}

    async def access_review(self, user: Obj, attributes: Obj) -> bool:
        return (user["username"], attributes["namespace"], attributes["verb"], attributes["resource"]) in self.grants

    async def find_deployments_by_id(self, deployment_id: str) -> list[Obj]:
        return [o for (p, _, _), o in self.objects.items() if p == "deployments" and o["status"].get("id") == deployment_id]

    async def server_ready(self) -> bool:
        return True

    def _check(self, token: str, ns: str, verb: str, plural: str) -> None:
        if (self._user(token), ns, verb, plural) not in self.grants:
            raise KubeError(403, "forbidden")

    async def get(self, token: str, plural: str, namespace: str, name: str) -> Obj:
        self._check(token, namespace, "get" if plural == "deployments" else "list", plural)
        if (plural, namespace, name) not in self.objects:
            raise KubeError(404, "not found")
        return self.objects[(plural, namespace, name)]

    async def list(self, token: str, plural: str, namespace: str, *, labels: str = "", fields: str = "") -> list[Obj]:
        self._check(token, namespace, "list", plural)
        return [o for (p, ns, _), o in self.objects.items() if p == plural and ns == namespace and matches(o, labels, fields)]

    async def patch(self, token: str, plural: str, namespace: str, name: str, patch: Obj) -> Obj:
        self._check(token, namespace, "patch", plural)
        body = self.objects[(plural, namespace, name)]
        if patch["metadata"].get("resourceVersion") != body["metadata"]["resourceVersion"]:
            raise KubeError(409, "conflict")
        self.patches.append((self._user(token), patch))
        body["spec"].update(patch["spec"])
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return body

    async def create(self, token: str, plural: str, namespace: str, body: Obj) -> Obj:
        self._check(token, namespace, "create", plural)
        created = {**body, "metadata": {"name": body["metadata"]["generateName"] + "abcde", "namespace": namespace}}
        self.created.append((self._user(token), created))
        return created


def matches(body: Obj, labels: str, fields: str) -> bool:
    have = body["metadata"].get("labels") or {}
    for term in filter(None, labels.split(",")):
        for op in ("=", ">", "<"):
            if op in term:
                key, value = term.split(op, 1)
                break
        if op == "=" and have.get(key) != value:
            return False
        if op in "><" and (key not in have or not (int(have[key]) > int(value) if op == ">" else int(have[key]) < int(value))):
            return False
    for term in filter(None, fields.split(",")):
        path, value = term.split("=", 1)
        node: Any = body
        for part in path.split("."):
            node = (node or {}).get(part)
        if node != value:
            return False
    return True


def make_version(ns: str, n: int, workspace: str, state: str = "ready", dep: str = "site") -> Obj:
    return {
        "metadata": {
            "name": f"{dep}-v{n}",
            "namespace": ns,
            "creationTimestamp": "2026-05-14T18:00:00Z",
            "labels": {
                meta.LABEL_DEPLOYMENT: dep,
                meta.LABEL_WORKSPACE: label_value(workspace),
                meta.LABEL_VERSION_NUMBER: str(n),
            },
        },
        "spec": {"deploymentRef": {"name": dep}, "kind": "static", "attribution": {"externalWorkspaceId": workspace}},
        "status": {"id": ver_id(n, ns), "versionNumber": n, "state": state, "deploymentId": DEP_A if ns == "a" else DEP_B},
    }


@pytest.fixture
def world() -> FakeKube:
    kube = FakeKube()
    for ns, dep_id in (("a", DEP_A), ("b", DEP_B)):
        kube.add(
            "deployments",
            {
                "metadata": {"name": "site", "namespace": ns, "resourceVersion": "1"},
                "spec": {"kind": "static", "promotedVersion": "site-v1"},
                "status": {
                    "id": dep_id,
                    "lastVersionNumber": 30,
                    "liveVersion": "site-v1",
                    "history": [{"version": "site-v1", "action": "promote"}],
                },
            },
        )
        for n in range(1, 31):
            kube.add(
                "deploymentversions",
                make_version(ns, n, "team@acme.io" if n % 3 == 0 else "other", "failed" if n == 29 else "ready"),
            )
    return kube


@pytest.fixture
def http(world: FakeKube, tmp_path: Any) -> TestClient:
    settings = Settings.defaults(
        api_max_json_bytes=1024, api_max_bundle_bytes=10_000, api_spool_dir=str(tmp_path), api_page_size=10
    )
    return TestClient(asgi(create_app(settings, world, store=None)))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_or_a_bad_one_is_401(http: TestClient) -> None:
    assert http.get(f"/api/v1/deployments/{DEP_A}/versions").json()["code"] == "unauthenticated"
    response = http.get(f"/api/v1/deployments/{DEP_A}/versions", headers=auth("nope"))
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"


def test_pages_cover_every_version_once_newest_first(http: TestClient) -> None:
    seen, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = http.get(f"/api/v1/deployments/{DEP_A}/versions", params=params, headers=auth("tok-a-read")).json()
        seen += [v["version_number"] for v in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(30, 0, -1))


def test_workspace_and_state_filters(http: TestClient) -> None:
    params = {"external_workspace_id": "team@acme.io", "limit": 100}
    body = http.get(f"/api/v1/deployments/{DEP_A}/versions", params=params, headers=auth("tok-a-read")).json()
    assert [v["version_number"] for v in body["data"]] == list(range(30, 0, -3))
    assert {v["external_workspace_id"] for v in body["data"]} == {"team@acme.io"}
    failed = http.get(f"/api/v1/deployments/{DEP_A}/versions", params={"state": "failed"}, headers=auth("tok-a-read")).json()
    assert [v["version_number"] for v in failed["data"]] == [29]


def test_another_tenants_ids_are_404_exactly_like_unknown_ones(http: TestClient) -> None:
    answers = [
        http.get(f"/api/v1/deployments/{DEP_B}/versions", headers=auth("tok-a-read")),
        http.get("/api/v1/deployments/dep_01HCCCCCCCCCCCCCCCCCCCCCCC/versions", headers=auth("tok-a-read")),
        http.get(f"/api/v1/deployments/{DEP_A}/versions/{ver_id(3, 'b')}", headers=auth("tok-a-read")),
        http.get(f"/api/v1/deployments/{DEP_B}", headers=auth("tok-a-write")),
        http.post(f"/api/v1/deployments/{DEP_B}/versions/{ver_id(3, 'b')}/promote", headers=auth("tok-a-write")),
    ]
    assert {(r.status_code, r.text) for r in answers} == {(404, answers[0].text)}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/deployments/site/versions",
        "/api/v1/deployments/dep_01haaaaaaaaaaaaaaaaaaaaaaa/versions",
        "/api/v1/deployments/..%2F..%2Fnamespaces/versions",
        f"/api/v1/deployments/{DEP_A}/versions/ver_x",
        f"/api/v1/deployments/{DEP_A}/versions/%00",
        f"/api/v1/deployments/{DEP_A}%0d%0aX-Injected:%201/versions",
        "/api/v1/deployments/" + "d" * 5000 + "/versions",
    ],
)
def test_odd_ids_are_404(http: TestClient, path: str) -> None:
    response = http.get(path, headers=auth("tok-a-read"))
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert "x-injected" not in response.headers


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"state": "gone"},
        {"cursor": "bogus"},
        {"external_workspace_id": "x" * 300},
    ],
)
def test_bad_parameters_are_400(http: TestClient, params: dict[str, Any]) -> None:
    response = http.get(f"/api/v1/deployments/{DEP_A}/versions", params=params, headers=auth("tok-a-read"))
    assert response.status_code == 400 and response.json()["code"] in ("invalid_parameter", "invalid_cursor")


def test_promote_needs_the_write_scope_and_forwards_the_callers_token(http: TestClient, world: FakeKube) -> None:
    url = f"/api/v1/deployments/{DEP_A}/versions/{ver_id(2)}/promote"
    denied = http.post(url, headers=auth("tok-a-read"))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    done = http.post(url, json={"reason": "launch"}, headers=auth("tok-a-write"))
    assert done.status_code == 200 and done.json()["status"] == "rolling_out"
    user, patch = world.patches[-1]
    assert user == "ci-a" and patch["spec"]["promotedVersion"] == "site-v2"
    assert patch["metadata"]["annotations"] == {meta.ANNOTATION_CHANGE_CAUSE: "launch"}


def test_promote_refusals(http: TestClient, world: FakeKube) -> None:
    failed = http.post(f"/api/v1/deployments/{DEP_A}/versions/{ver_id(29)}/promote", headers=auth("tok-a-write"))
    assert failed.status_code == 422 and failed.json()["code"] == "not_promotable"
    world.objects[("deployments", "a", "site")]["spec"]["promotionPolicy"] = "Auto"
    auto = http.post(f"/api/v1/deployments/{DEP_A}/versions/{ver_id(2)}/promote", headers=auth("tok-a-write"))
    assert auto.status_code == 409 and auto.json()["code"] == "auto_promotion"


def test_rollback_picks_the_previous_live_version(http: TestClient, world: FakeKube) -> None:
    dep = world.objects[("deployments", "a", "site")]
    dep["status"].update(liveVersion="site-v3", history=[{"version": "site-v1"}, {"version": "site-v2"}, {"version": "site-v3"}])
    response = http.post(f"/api/v1/deployments/{DEP_A}/rollback", headers=auth("tok-a-write"))
    assert response.status_code == 200 and world.patches[-1][1]["spec"]["promotedVersion"] == "site-v2"


def test_hostile_bodies(http: TestClient) -> None:
    url = f"/api/v1/deployments/{DEP_A}/versions/{ver_id(2)}/promote"
    bad_json = http.post(url, content=b"{not json", headers={**auth("tok-a-write"), "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid_json"
    huge = http.post(url, content=b"{" + b" " * 5000 + b"}", headers={**auth("tok-a-write"), "Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    unknown = http.post(url, json={"reason": "x", "created_by": "someone-else"}, headers=auth("tok-a-write"))
    assert unknown.status_code == 400


def test_publish_is_refused_before_reading_for_oversized_or_unknown_bodies(http: TestClient) -> None:
    url = f"/api/v1/deployments/{DEP_A}/versions"
    big = http.post(url, content=b"x" * 20_000, headers={**auth("tok-a-write"), "Content-Type": "application/gzip"})
    assert big.status_code == 413
    odd = http.post(url, content=b"x", headers={**auth("tok-a-write"), "Content-Type": "text/html"})
    assert odd.status_code == 415 and odd.json()["code"] == "unsupported_media_type"
    read_only = http.post(
        url, content=tar_gz({"index.html": b"x"}), headers={**auth("tok-a-read"), "Content-Type": "application/gzip"}
    )
    assert read_only.status_code == 403


def test_publish_dynamic_to_a_static_deployment_is_422(http: TestClient) -> None:
    response = http.post(f"/api/v1/deployments/{DEP_A}/versions", json={"runtime": {"image": "x"}}, headers=auth("tok-a-write"))
    assert response.status_code == 422 and response.json()["code"] == "kind_mismatch"


def test_token_reviews_are_cached(http: TestClient, world: FakeKube) -> None:
    for _ in range(5):
        http.get(f"/api/v1/deployments/{DEP_A}", headers=auth("tok-a-read"))
    assert world.reviews == 1


def test_deployment_view_says_what_the_caller_may_do(http: TestClient) -> None:
    reader = http.get(f"/api/v1/deployments/{DEP_A}", headers=auth("tok-a-read")).json()
    writer = http.get(f"/api/v1/deployments/{DEP_A}", headers=auth("tok-a-write")).json()
    assert reader["permissions"] == {"read": True, "promote": False, "publish": False}
    assert writer["permissions"] == {"read": True, "promote": True, "publish": True}
    assert reader["live_version"]["name"] == "site-v1" and reader["tenant_id"] == "a"


def test_openapi_and_health(http: TestClient) -> None:
    doc = http.get("/openapi.json").json()
    assert "/api/v1/deployments/{deployment_id}/versions" in doc["paths"]
    assert set(doc["components"]["schemas"]["SeedVersion"]["properties"]) >= {
        "id",
        "deployment_id",
        "version_number",
        "artifact_manifest",
    }
    assert "HTTPValidationError" not in json.dumps(doc)
    assert http.get("/healthz").json() == {"status": "ok"}
    page = http.get("/ui/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


def test_a_chunked_body_without_length_is_cut_off_at_the_cap(http: TestClient) -> None:
    def chunks() -> Any:
        yield b'{"reason": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    url = f"/api/v1/deployments/{DEP_A}/versions/{ver_id(2)}/promote"
    response = http.post(url, content=chunks(), headers={**auth("tok-a-write"), "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_promoting_a_version_still_building_is_accepted_as_intent(http: TestClient, world: FakeKube) -> None:
    world.objects[("deploymentversions", "a", "site-v5")]["status"]["state"] = "building"
    response = http.post(f"/api/v1/deployments/{DEP_A}/versions/{ver_id(5)}/promote", headers=auth("tok-a-write"))
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert world.patches[-1][1]["spec"]["promotedVersion"] == "site-v5"


def test_a_rollout_in_progress_is_409(http: TestClient, world: FakeKube) -> None:
    world.objects[("deployments", "a", "site")]["status"]["rollout"] = {"version": "site-v4"}
    response = http.post(f"/api/v1/deployments/{DEP_A}/versions/{ver_id(5)}/promote", headers=auth("tok-a-write"))
    assert response.status_code == 409 and response.json()["code"] == "promotion_in_progress"
