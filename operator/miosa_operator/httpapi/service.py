"""The seed's operations over the cluster, for one authenticated caller; no HTTP here.

Every operation starts the same way (``_resolve``):

1. the ``dep_`` id is checked for shape and looked up with **one field-selected LIST**
   (``status.id``, a selectable field of the CRD) made by the API itself, the only
   cluster-wide read it does;
2. a SubjectAccessReview asks whether the caller may *read* Deployments and versions in
   that namespace; if not, the answer is the same 404 as for an id that does not exist;
3. for a write, a second review asks for the write scope: 403 if missing (the caller can
   read, so saying "forbidden" reveals nothing).

Everything after that is done **with the caller's own token**: listing, reading a version
by its ``ver_`` id (one field-selected LIST in that namespace), patching the Deployment,
creating a version.  The API server enforces RBAC a second time, records the caller in its
audit log, and the admission webhook records the caller as the promotion's actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..api import meta
from ..api.conditions import ConditionType
from ..api.seed import SeedVersion, history_rows, seed_version_model
from ..api.times import rfc3339
from ..api.types import Obj
from ..plugin.commands import promotion_patch, rollout_outcome
from ..plugin.selection import AttributionFilter, belongs, state_selector, version_selector
from ..settings import Settings
from ..store.base import StoreError, TransientStoreError
from . import uploads
from .auth import PROMOTE, PUBLISH, READ, Access, Caller, Scope
from .decisions import bootable, previous_live_candidates, promotion_verdict
from .errors import ApiError, Code, cluster_unavailable, forbidden, not_found
from .kube import Kube, KubeError
from .paging import BadCursor, PagePlanner, decode_cursor, encode_cursor, window_selector
from .schemas import (
    Attribution,
    ConditionView,
    DeploymentView,
    DynamicPublishRequest,
    Permissions,
    PromotionResult,
    RolloutView,
    VersionPage,
)

DEPLOYMENT_ID = re.compile(r"^dep_[0-9A-HJKMNP-TV-Z]{26}$")
VERSION_ID = re.compile(r"^ver_[0-9A-HJKMNP-TV-Z]{26}$")
POLL_SECONDS = 0.5
FINAL_STATES = frozenset({"ready", "failed"})


@dataclass(frozen=True)
class Filters:
    external_workspace_id: str | None = None
    external_user_id: str | None = None
    external_project_id: str | None = None
    state: str | None = None

    def attribution(self) -> AttributionFilter:
        return AttributionFilter(self.external_workspace_id, self.external_user_id, self.external_project_id)


@dataclass(frozen=True)
class Wait:
    enabled: bool = False
    seconds: float = 60.0


def _name(body: Obj) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


def _namespace(body: Obj) -> str:
    return str((body.get("metadata") or {}).get("namespace", ""))


def _as_caller_error(exc: KubeError, *, writing: bool, refused: tuple[int, Code] = (422, Code.NOT_PROMOTABLE)) -> ApiError:
    """What an API server refusal of a request made with the caller's token means here."""
    if exc.status == 0 or exc.status == 429 or exc.status >= 500:
        return cluster_unavailable(exc.message)
    if exc.status == 401:
        return ApiError(401, Code.UNAUTHENTICATED, "the Kubernetes API server no longer accepts this token")
    if exc.status == 403 and writing:
        return ApiError(403, Code.FORBIDDEN, f"the Kubernetes API server refused: {exc.message}")
    if exc.status in (403, 404):
        return not_found()
    if exc.status == 409:
        return ApiError(409, Code.CONFLICT, "the deployment changed while this request was being made; read it again and retry")
    # 400/422 on a write: the API server's validation or the admission webhook said why.
    return ApiError(refused[0], refused[1], exc.message)


class DeploymentsService:
    def __init__(self, kube: Kube, access: Access, settings: Settings, store: Any) -> None:
        self.kube, self.access, self.settings, self.store = kube, access, settings, store
        self.slots = uploads.UploadSlots(settings.api_max_uploads, settings.api_max_uploads_per_tenant)

    # ------------------------------------------------------------------ resolution and access
    async def _resolve(self, caller: Caller, deployment_id: str, write: Scope | None = None) -> Obj:
        if not DEPLOYMENT_ID.match(deployment_id):
            raise not_found()
        try:
            found = await self.kube.find_deployments_by_id(deployment_id)
            if len(found) != 1 or not await self.access.allowed(caller, READ, _namespace(found[0])):
                raise not_found()
            if write is not None and not await self.access.allowed(caller, write, _namespace(found[0])):
                raise forbidden(write.name, write.role)
        except KubeError as exc:
            raise cluster_unavailable(exc.message) from exc
        return found[0]

    async def _version_by_id(self, caller: Caller, deployment: Obj, version_id: str) -> Obj:
        if not VERSION_ID.match(version_id):
            raise not_found()
        items = await self._caller_call(
            self.kube.list(caller.token, meta.VERSION_PLURAL, _namespace(deployment), fields=f"status.id={version_id}")
        )
        mine = [item for item in items if belongs(item, _name(deployment))]
        if len(mine) != 1:
            raise not_found()
        return mine[0]

    async def _caller_call(
        self, call: Any, *, writing: bool = False, refused: tuple[int, Code] = (422, Code.NOT_PROMOTABLE)
    ) -> Any:
        try:
            return await call
        except KubeError as exc:
            raise _as_caller_error(exc, writing=writing, refused=refused) from exc

    # ------------------------------------------------------------------ reads
    async def list_versions(
        self, caller: Caller, deployment_id: str, filters: Filters, limit: int, cursor: str | None
    ) -> VersionPage:
        try:
            before = decode_cursor(cursor) if cursor is not None else None
        except BadCursor as exc:
            raise ApiError(400, Code.INVALID_CURSOR, str(exc)) from exc
        deployment = await self._resolve(caller, deployment_id)
        name, namespace = _name(deployment), _namespace(deployment)
        last = int((deployment.get("status") or {}).get("lastVersionNumber") or 0)
        planner = PagePlanner(top=before if before is not None else last + 1, limit=limit)
        attribution = filters.attribution()
        labels, fields = version_selector(name, attribution), state_selector(filters.state)
        while (window := planner.window()) is not None:
            items = await self._caller_call(
                self.kube.list(
                    caller.token, meta.VERSION_PLURAL, namespace, labels=window_selector(labels, *window), fields=fields
                )
            )
            planner.add(item for item in items if belongs(item, name, attribution))
        page, next_before = planner.page()
        return VersionPage(
            data=[seed_version_model(item) for item in page],
            next_cursor=encode_cursor(next_before) if next_before is not None else None,
        )

    async def get_version(self, caller: Caller, deployment_id: str, version_id: str) -> SeedVersion:
        deployment = await self._resolve(caller, deployment_id)
        return seed_version_model(await self._version_by_id(caller, deployment, version_id))

    async def get_deployment(self, caller: Caller, deployment_id: str) -> DeploymentView:
        return await self._view(caller, await self._resolve(caller, deployment_id))

    async def _view(self, caller: Caller, deployment: Obj) -> DeploymentView:
        namespace, spec, status = _namespace(deployment), deployment.get("spec") or {}, deployment.get("status") or {}
        live = None
        if status.get("liveVersion"):
            with contextlib.suppress(ApiError):  # collected from the cluster by an admin: show no live object
                live = seed_version_model(
                    await self._caller_call(self.kube.get(caller.token, meta.VERSION_PLURAL, namespace, status["liveVersion"]))
                )
        rollout = status.get("rollout")
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), None)
        try:
            can_promote = await self.access.allowed(caller, PROMOTE, namespace)
            can_publish = await self.access.allowed(caller, PUBLISH, namespace)
        except KubeError as exc:
            raise cluster_unavailable(exc.message) from exc
        return DeploymentView(
            id=status.get("id"),
            name=_name(deployment),
            tenant_id=namespace,
            kind=spec.get("kind"),
            promotion_policy=spec.get("promotionPolicy") or "Manual",
            promoted_version=spec.get("promotedVersion"),
            live_version=live,
            last_version_number=status.get("lastVersionNumber"),
            rollout=RolloutView(
                version=rollout.get("version"),
                version_number=rollout.get("versionNumber"),
                action=rollout.get("action"),
                started_at=rfc3339(rollout.get("startedAt")),
            )
            if rollout
            else None,
            ready=ConditionView(status=ready.get("status"), reason=ready.get("reason"), message=ready.get("message"))
            if ready
            else None,
            history=history_rows(status),
            created_at=rfc3339((deployment.get("metadata") or {}).get("creationTimestamp")),
            permissions=Permissions(read=True, promote=can_promote, publish=can_publish),
        )

    # ------------------------------------------------------------------ promote and rollback
    async def promote(
        self, caller: Caller, deployment_id: str, version_id: str, reason: str | None, wait: Wait
    ) -> tuple[int, PromotionResult]:
        deployment = await self._resolve(caller, deployment_id, write=PROMOTE)
        version = await self._version_by_id(caller, deployment, version_id)
        return await self._go_live(caller, deployment, version, reason, wait, rollback=False)

    async def rollback(
        self, caller: Caller, deployment_id: str, version_id: str | None, reason: str | None, wait: Wait
    ) -> tuple[int, PromotionResult]:
        deployment = await self._resolve(caller, deployment_id, write=PROMOTE)
        if version_id is not None:
            version = await self._version_by_id(caller, deployment, version_id)
        else:
            version = await self._previous_live(caller, deployment)
        return await self._go_live(caller, deployment, version, reason, wait, rollback=True)

    async def _previous_live(self, caller: Caller, deployment: Obj) -> Obj:
        for name in previous_live_candidates(deployment):
            try:
                candidate = await self.kube.get(caller.token, meta.VERSION_PLURAL, _namespace(deployment), name)
            except KubeError as exc:
                if exc.status == 404:
                    continue
                raise _as_caller_error(exc, writing=False) from exc
            if bootable(candidate):
                return candidate
        raise ApiError(409, Code.NO_PREVIOUS_VERSION, "no previous live version that can still go live; pass version_id")

    async def _go_live(
        self, caller: Caller, deployment: Obj, version: Obj, reason: str | None, wait: Wait, *, rollback: bool
    ) -> tuple[int, PromotionResult]:
        verdict = promotion_verdict(deployment, version, rollback=rollback)
        patch = promotion_patch(_name(version), reason, switch_to_manual=verdict.switch_to_manual)
        patch["metadata"]["resourceVersion"] = deployment["metadata"]["resourceVersion"]  # a concurrent change -> 409
        namespace = _namespace(deployment)
        patched = await self._caller_call(
            self.kube.patch(caller.token, meta.DEPLOYMENT_PLURAL, namespace, _name(deployment), patch), writing=True
        )
        status, state = verdict.status, "pending" if verdict.status == 202 else "rolling_out"
        if wait.enabled:
            generation = int((patched.get("metadata") or {}).get("generation") or 0)
            patched, live = await self._wait_live(caller, patched, _name(version), generation, wait.seconds)
            status, state = (200, "live") if live else (202, state)
        return status, PromotionResult(
            status=state,
            version=seed_version_model(
                await self._caller_call(self.kube.get(caller.token, meta.VERSION_PLURAL, namespace, _name(version)))
            ),
            deployment=await self._view(caller, patched),
        )

    async def _wait_live(
        self, caller: Caller, deployment: Obj, version: str, generation: int, seconds: float
    ) -> tuple[Obj, bool]:
        deadline = time.monotonic() + min(seconds, self.settings.api_max_wait_seconds)
        namespace, name = _namespace(deployment), _name(deployment)
        while True:
            outcome = rollout_outcome(deployment, version, generation)
            if outcome is not None and outcome.done:
                return deployment, True
            if outcome is not None:
                raise ApiError(422, Code.ROLLOUT_FAILED, f"{version} did not go live: {outcome.message}")
            if time.monotonic() >= deadline:
                return deployment, False
            await asyncio.sleep(POLL_SECONDS)
            deployment = await self._caller_call(self.kube.get(caller.token, meta.DEPLOYMENT_PLURAL, namespace, name))

    # ------------------------------------------------------------------ publish
    async def publish_bundle(
        self,
        caller: Caller,
        deployment_id: str,
        body: AsyncIterator[bytes],
        content_length: str | None,
        attribution: Attribution,
        entrypoint: str | None,
        wait: Wait,
    ) -> SeedVersion:
        deployment = await self._resolve(caller, deployment_id, write=PUBLISH)
        self._require_kind(deployment, "static")
        uploads.check_declared_length(content_length, self.settings.api_max_bundle_bytes)
        namespace, dep_id = _namespace(deployment), (deployment.get("status") or {}).get("id", deployment_id)
        with self.slots.take(namespace):
            chunks = uploads.with_idle_timeout(body, self.settings.api_body_idle_timeout)
            spooled = await uploads.spool(chunks, self.settings.api_spool_directory(), self.settings.api_max_bundle_bytes)
            try:
                uri = uploads.upload_uri(self.settings.api_uploads_uri, namespace, dep_id, spooled.sha256, spooled.format)
                await asyncio.to_thread(self._store_file, uri, spooled)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(spooled.path)
        artifact: Obj = {"uri": uri, "sha256": spooled.sha256}
        if entrypoint:
            artifact["entrypoint"] = entrypoint
        spec = self._version_spec(deployment, caller, attribution, kind="static", artifact=artifact)
        return await self._create(caller, deployment, spec, wait)

    async def publish_dynamic(
        self, caller: Caller, deployment_id: str, request: DynamicPublishRequest, wait: Wait
    ) -> SeedVersion:
        deployment = await self._resolve(caller, deployment_id, write=PUBLISH)
        self._require_kind(deployment, "dynamic")
        runtime = request.runtime
        wire: Obj = {"image": runtime.image, "port": runtime.port, "healthCheckPath": runtime.health_check_path}
        if runtime.command is not None:
            wire["command"] = runtime.command
        if runtime.args is not None:
            wire["args"] = runtime.args
        if runtime.env is not None:
            wire["env"] = [{"name": e.name, "value": e.value} for e in runtime.env]
        spec = self._version_spec(deployment, caller, request, kind="dynamic", runtime=wire)
        return await self._create(caller, deployment, spec, wait)

    def _store_file(self, uri: str, spooled: uploads.Spooled) -> None:
        try:
            with open(spooled.path, "rb") as source:
                self.store.put_if_absent(uri, source, size=spooled.size)  # False: the same bundle was published before
        except TransientStoreError as exc:
            raise ApiError(503, Code.STORE_UNAVAILABLE, "the artifact store is unavailable; retry") from exc
        except StoreError as exc:
            raise ApiError(500, Code.INTERNAL, "the artifact store refused the upload") from exc

    @staticmethod
    def _require_kind(deployment: Obj, kind: str) -> None:
        actual = (deployment.get("spec") or {}).get("kind")
        if actual != kind:
            how = "a bundle as the request body" if actual == "static" else "a JSON body with a runtime"
            raise ApiError(422, Code.KIND_MISMATCH, f"the deployment is {actual}: publish {how}")

    @staticmethod
    def _version_spec(deployment: Obj, caller: Caller, attribution: Attribution, **parts: Obj | str) -> Obj:
        """The frozen spec: ``createdBy`` is the authenticated caller, never a request field."""
        who: Obj = {"createdBy": caller.username[:253]}
        for key, value in (
            ("externalWorkspaceId", attribution.external_workspace_id),
            ("externalUserId", attribution.external_user_id),
            ("externalProjectId", attribution.external_project_id),
        ):
            if value:
                who[key] = value
        spec: Obj = {"deploymentRef": {"name": _name(deployment)}, **parts, "attribution": who}
        source = {k: v for k, v in (("sandboxId", attribution.source_sandbox_id), ("buildId", attribution.build_id)) if v}
        if source:
            spec["source"] = source
        if attribution.metadata:
            spec["metadata"] = dict(attribution.metadata)
        return spec

    async def _create(self, caller: Caller, deployment: Obj, spec: Obj, wait: Wait) -> SeedVersion:
        body = {
            "apiVersion": meta.API_VERSION,
            "kind": meta.VERSION_KIND,
            "metadata": {"generateName": f"{_name(deployment)[:50]}-"},
            "spec": spec,
        }
        namespace = _namespace(deployment)
        created = await self._caller_call(
            self.kube.create(caller.token, meta.VERSION_PLURAL, namespace, body),
            writing=True,
            refused=(400, Code.INVALID_PARAMETER),
        )
        if wait.enabled:
            deadline = time.monotonic() + min(wait.seconds, self.settings.api_max_wait_seconds)
            while (created.get("status") or {}).get("state") not in FINAL_STATES and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
                created = await self._caller_call(self.kube.get(caller.token, meta.VERSION_PLURAL, namespace, _name(created)))
        return seed_version_model(created)
