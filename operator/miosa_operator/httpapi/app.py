"""The HTTP routes: thin adapters from HTTP to ``DeploymentsService``.

Each route authenticates the caller, parses its parameters into typed values, calls the
service and returns a model; every decision is in the service, ``decisions`` or ``paging``.
The OpenAPI document at ``/openapi.json`` is FastAPI's, generated from the same models
the routes return (``api.seed.SeedVersion``, ``schemas``), including the error shape and
the ``Bearer`` security scheme, so a generated client matches the server by construction.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..api.seed import SeedVersion
from ..plugin.selection import STATES
from ..settings import Settings
from .auth import Access, Caller
from .errors import ERROR_RESPONSES, WRITE_RESPONSES, ApiError, Code, ErrorBody, bad_parameter
from .kube import Kube
from .middleware import AccessLog, BodyGuard, SecurityHeaders
from .schemas import (
    Attribution,
    DeploymentView,
    DynamicPublishRequest,
    Health,
    PromoteRequest,
    PromotionResult,
    RollbackRequest,
    VersionPage,
)
from .service import DeploymentsService, Filters, Wait

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PUBLISH_PATH = re.compile(r"^/api/v1/deployments/[^/]+/versions$")
BUNDLE_TYPES = ("application/zstd", "application/gzip", "application/x-tar", "application/octet-stream")

bearer = HTTPBearer(auto_error=False, description="A Kubernetes token (ServiceAccount or OIDC) the API server accepts.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
ExternalIdQuery = Annotated[str | None, Query(min_length=1, max_length=253)]
WaitQuery = Annotated[bool, Query(description="Wait until the version is live (promote/rollback) or built (publish).")]
TimeoutQuery = Annotated[float, Query(gt=0, le=3600, description="Seconds to wait with wait=true (capped by the server).")]


def _is_publish(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("method") == "POST" and bool(PUBLISH_PATH.match(scope.get("path", "")))


def create_app(settings: Settings, kube: Kube, store: Any) -> FastAPI:
    access = Access(kube, settings.api_auth_cache_seconds, settings.api_auth_cache_entries)
    service = DeploymentsService(kube, access, settings, store)
    state = {"shutting_down": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await kube.start()
        try:
            yield
        finally:
            state["shutting_down"] = True
            await kube.close()

    app = FastAPI(
        title="miosa-operator API",
        version=__version__,
        summary="The seed's Deployment Versions API over Kubernetes, authorised by Kubernetes RBAC.",
        description=(
            "Bearer = a Kubernetes token. deployments:read = ClusterRole miosa-deployments-read in the "
            "deployment's namespace; deployments:write = miosa-deployments-write. Errors: {code, message}."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    async def caller_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
        caller = await access.authenticate(request.headers.get("authorization"))
        request.state.user = caller.username
        return caller

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            error = ApiError(400, Code.INVALID_JSON, "the request body is not valid JSON")
        else:
            error = bad_parameter(_describe(errors))
        return JSONResponse(error.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: Code.NOT_FOUND, 405: Code.INVALID_PARAMETER}.get(exc.status_code, Code.INVALID_PARAMETER)
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"code": code, "message": message}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", exc)
        return JSONResponse({"code": Code.INTERNAL, "message": "internal error"}, status_code=500)

    # ------------------------------------------------------------------ health
    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz(response: Response) -> Health:
        if state["shutting_down"] or not await kube.server_ready():
            response.status_code = 503
            return Health(status="unavailable")
        return Health(status="ok")

    # ------------------------------------------------------------------ versions
    prefix = "/api/v1/deployments/{deployment_id}"

    @app.get(f"{prefix}/versions", response_model=VersionPage, responses=ERROR_RESPONSES, tags=["versions"])
    async def list_versions(
        request: Request,
        credentials: Credentials,
        deployment_id: str,
        external_workspace_id: ExternalIdQuery = None,
        external_user_id: ExternalIdQuery = None,
        external_project_id: ExternalIdQuery = None,
        state_filter: Annotated[str | None, Query(alias="state", description=f"One of {', '.join(STATES)}.")] = None,
        limit: Annotated[int | None, Query(ge=1, description="Page size (server maximum applies).")] = None,
        cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page.")] = None,
    ) -> VersionPage:
        """List a deployment's versions, newest first, optionally for one end-customer."""
        caller = await caller_of(request, credentials)
        if state_filter is not None and state_filter not in STATES:
            raise bad_parameter(f"state must be one of {', '.join(STATES)}")
        size = limit or settings.api_page_size
        if size > settings.api_max_page_size:
            raise bad_parameter(f"limit must be at most {settings.api_max_page_size}")
        filters = Filters(external_workspace_id, external_user_id, external_project_id, state_filter)
        return await service.list_versions(caller, deployment_id, filters, size, cursor)

    @app.get(f"{prefix}/versions/{{version_id}}", response_model=SeedVersion, responses=ERROR_RESPONSES, tags=["versions"])
    async def get_version(request: Request, credentials: Credentials, deployment_id: str, version_id: str) -> SeedVersion:
        """One version in the seed's shape."""
        return await service.get_version(await caller_of(request, credentials), deployment_id, version_id)

    @app.post(
        f"{prefix}/versions/{{version_id}}/promote",
        response_model=PromotionResult,
        responses={**WRITE_RESPONSES, 202: {"model": PromotionResult, "description": "Accepted as intent: not live yet."}},
        tags=["versions"],
    )
    async def promote(
        request: Request,
        credentials: Credentials,
        response: Response,
        deployment_id: str,
        version_id: str,
        body: PromoteRequest | None = None,
        wait: WaitQuery = False,
        timeout: TimeoutQuery = 60.0,
    ) -> PromotionResult:
        """Make a version the live one (deployments:write)."""
        caller = await caller_of(request, credentials)
        reason = body.reason if body else None
        status, result = await service.promote(caller, deployment_id, version_id, reason, Wait(wait, timeout))
        response.status_code = status
        return result

    @app.post(
        f"{prefix}/rollback",
        response_model=PromotionResult,
        responses={**WRITE_RESPONSES, 202: {"model": PromotionResult, "description": "Accepted: not live yet."}},
        tags=["deployments"],
    )
    async def rollback(
        request: Request,
        credentials: Credentials,
        response: Response,
        deployment_id: str,
        body: RollbackRequest | None = None,
        wait: WaitQuery = False,
        timeout: TimeoutQuery = 60.0,
    ) -> PromotionResult:
        """Roll back to the previous live version, or to version_id (deployments:write)."""
        caller = await caller_of(request, credentials)
        body = body or RollbackRequest()
        status, result = await service.rollback(caller, deployment_id, body.version_id, body.reason, Wait(wait, timeout))
        response.status_code = status
        return result

    @app.get(prefix, response_model=DeploymentView, responses=ERROR_RESPONSES, tags=["deployments"])
    async def get_deployment(request: Request, credentials: Credentials, deployment_id: str) -> DeploymentView:
        """The live version, the promotion policy, the history, and what the caller may do."""
        return await service.get_deployment(await caller_of(request, credentials), deployment_id)

    @app.post(
        f"{prefix}/versions",
        response_model=SeedVersion,
        status_code=201,
        responses={
            **WRITE_RESPONSES,
            408: {"model": ErrorBody, "description": "The body stalled."},
            413: {"model": ErrorBody, "description": "The body is too large."},
            415: {"model": ErrorBody, "description": "Not a .tar.zst, .tar.gz or .tar bundle."},
            429: {"model": ErrorBody, "description": "Too many uploads in progress."},
        },
        tags=["versions"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "A static bundle as the raw body, or a dynamic runtime as JSON.",
                "content": {
                    **{t: {"schema": {"type": "string", "format": "binary"}} for t in BUNDLE_TYPES},
                    "application/json": {"schema": {"$ref": "#/components/schemas/DynamicPublishRequest"}},
                },
            }
        },
    )
    async def publish(
        request: Request,
        credentials: Credentials,
        deployment_id: str,
        external_workspace_id: ExternalIdQuery = None,
        external_user_id: ExternalIdQuery = None,
        external_project_id: ExternalIdQuery = None,
        source_sandbox_id: ExternalIdQuery = None,
        build_id: ExternalIdQuery = None,
        entrypoint: Annotated[str | None, Query(min_length=1, max_length=1024, pattern=r"^[^/].*$")] = None,
        metadata: Annotated[str | None, Query(max_length=8192, description="Static bundles: a JSON object of strings.")] = None,
        wait: WaitQuery = False,
        timeout: TimeoutQuery = 60.0,
    ) -> SeedVersion:
        """Publish a version: the bundle is stored in the tenant's upload prefix; created_by is the caller."""
        caller = await caller_of(request, credentials)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/json":
            raw = await _read_json_body(request, settings.api_max_json_bytes)
            try:
                publish_request = DynamicPublishRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise _validation_error(exc) from exc
            return await service.publish_dynamic(caller, deployment_id, publish_request, Wait(wait, timeout))
        if media_type not in BUNDLE_TYPES:
            raise ApiError(415, Code.UNSUPPORTED_MEDIA_TYPE, f"send a bundle as one of {', '.join(BUNDLE_TYPES)}, or JSON")
        try:
            attribution = Attribution(
                external_workspace_id=external_workspace_id,
                external_user_id=external_user_id,
                external_project_id=external_project_id,
                source_sandbox_id=source_sandbox_id,
                build_id=build_id,
                metadata=json.loads(metadata) if metadata else None,
            )
        except (ValueError, ValidationError) as exc:
            raise bad_parameter("metadata must be a JSON object of strings") from exc
        return await service.publish_bundle(
            caller,
            deployment_id,
            request.stream(),
            request.headers.get("content-length"),
            attribution,
            entrypoint,
            Wait(wait, timeout),
        )

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    # ------------------------------------------------------------------ the web page
    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")

    # Outermost first: log everything, then headers, then the body guard, then FastAPI
    # (lifespan events pass through all three).
    guarded = BodyGuard(
        app,
        json_limit=settings.api_max_json_bytes,
        bundle_limit=settings.api_max_bundle_bytes,
        idle_timeout=settings.api_body_idle_timeout,
        is_upload=_is_publish,
    )
    app.state.asgi = AccessLog(SecurityHeaders(guarded))
    return app


def asgi(app: FastAPI) -> Any:
    """The application to serve: the FastAPI app wrapped in the middleware above."""
    return app.state.asgi


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, corrected where our contract differs from its defaults: invalid
    parameters are 400 (not FastAPI's 422, which here means "not promotable"), and the
    publish body's JSON variant is a named schema."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for path in doc["paths"].values():
        for operation in path.values():
            answers = operation.get("responses", {})
            default_422 = answers.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if default_422.get("$ref", "").endswith("/HTTPValidationError"):
                del answers["422"]
            answers.setdefault(
                "400",
                {
                    "description": "Bad parameter.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                },
            )
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    dynamic = DynamicPublishRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(dynamic.pop("$defs", {}))
    schemas["DynamicPublishRequest"] = dynamic
    app.openapi_schema = doc
    return doc


async def _read_json_body(request: Request, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, Code.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes")
    return bytes(data)


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, Code.INVALID_JSON, "the request body is not valid JSON")
    return bad_parameter(_describe(errors))


def _describe(errors: Any) -> str:
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)
