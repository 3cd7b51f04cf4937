"""Errors of the HTTP API: a stable machine ``code``, a human ``message``, the right status.

Clients branch on ``code`` (documented in the OpenAPI document and README), never on the
message.  The statuses follow the issue's contract:

* 400 a bad parameter, body or cursor; 401 no or bad token; 403 the caller may read the
  Deployment but lacks the scope for this operation;
* 404 unknown **or not yours**: one code, one message, whether the id does not exist, is
  malformed, or lives in a namespace the caller cannot read, so nothing leaks across tenants;
* 409 a promotion that conflicts (Auto policy, a rollout in progress, a concurrent change);
* 422 a version that is not promotable (failed, collected, another kind);
* 408/413/415/429 for hostile or oversized uploads; 502/503 when the cluster or the store
  is unreachable (the caller may retry).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException


class Code(StrEnum):
    INVALID_PARAMETER = "invalid_parameter"
    INVALID_JSON = "invalid_json"
    INVALID_CURSOR = "invalid_cursor"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    AUTO_PROMOTION = "auto_promotion"
    PROMOTION_IN_PROGRESS = "promotion_in_progress"
    CONFLICT = "conflict"
    NOT_PROMOTABLE = "not_promotable"
    NO_PREVIOUS_VERSION = "no_previous_version"
    ROLLOUT_FAILED = "rollout_failed"
    KIND_MISMATCH = "kind_mismatch"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    TOO_MANY_UPLOADS = "too_many_uploads"
    CLUSTER_UNAVAILABLE = "cluster_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    INTERNAL = "internal"


class ErrorBody(BaseModel):
    """Every error answer."""

    code: Code = Field(description="Stable machine-readable code.")
    message: str = Field(description="What went wrong, for a human.")


class ApiError(HTTPException):
    """Raised anywhere while a request is served, even from inside FastAPI's body parsing
    (an ``HTTPException`` passes through it unchanged), and answered by one handler."""

    def __init__(self, status: int, code: Code, message: str) -> None:
        super().__init__(status, message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, str]:
        return ErrorBody(code=self.code, message=self.message).model_dump(mode="json")


NOT_FOUND_MESSAGE = "no such deployment or version (or it is not yours)"


def not_found() -> ApiError:
    """The one answer for unknown, malformed and other tenants' ids."""
    return ApiError(404, Code.NOT_FOUND, NOT_FOUND_MESSAGE)


def unauthenticated(message: str = "a valid Kubernetes bearer token is required (Authorization: Bearer <token>)") -> ApiError:
    return ApiError(401, Code.UNAUTHENTICATED, message)


def forbidden(scope: str, role: str) -> ApiError:
    return ApiError(403, Code.FORBIDDEN, f"this needs the {scope} scope (ClusterRole {role} in the deployment's namespace)")


def bad_parameter(message: str) -> ApiError:
    return ApiError(400, Code.INVALID_PARAMETER, message)


def cluster_unavailable(detail: str) -> ApiError:
    return ApiError(503, Code.CLUSTER_UNAVAILABLE, f"the Kubernetes API server did not answer: {detail}")


# Documented once for the OpenAPI document: status -> description.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Bad parameter, body or cursor."},
    401: {"model": ErrorBody, "description": "No token, or the API server rejected it."},
    404: {"model": ErrorBody, "description": "Unknown or not yours (identical answers)."},
    503: {"model": ErrorBody, "description": "The Kubernetes API server is unreachable; retry."},
}
WRITE_RESPONSES: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorBody, "description": "The caller lacks deployments:write."},
    409: {"model": ErrorBody, "description": "Auto policy, a rollout in progress, or a concurrent change."},
    422: {"model": ErrorBody, "description": "The version is not promotable (failed, collected, another kind)."},
}
