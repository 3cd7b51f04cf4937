"""Who is calling, and what may they do in a namespace: Kubernetes decides, we ask it.

* ``Authorization: Bearer <token>`` is a Kubernetes token (a ServiceAccount token, or an
  OIDC token the API server accepts).  A ``TokenReview`` authenticates it; there is no
  user database and no session.
* Scopes are ``SubjectAccessReview`` questions about the same RBAC the cluster already has
  (``SCOPES``): ``deployments:read`` is get of Deployments and list of DeploymentVersions in
  the namespace (ClusterRole ``miosa-deployments-read``); promote and rollback need patch of
  Deployments, publish needs create of DeploymentVersions (``miosa-deployments-write``).
* Answers are cached for a few seconds (``auth_cache_seconds``), keyed by a hash of the
  token, never the token itself, in a bounded LRU, so a page of the web UI or a client
  paging through history costs one review per interval, and a flood of random tokens cannot
  grow memory.  Revoking a binding or a token therefore takes effect within that interval.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..api import meta
from ..kube.tokenreview import reviewed_user
from .errors import cluster_unavailable, unauthenticated
from .kube import Kube, KubeError

T = TypeVar("T")

# RFC 6750 b64token, and short enough for any real JWT.
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9\-._~+/]+=*)$")
MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True)
class Caller:
    """An authenticated caller and the token their requests are forwarded with."""

    username: str
    uid: str
    groups: tuple[str, ...]
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)
    token: str = field(default="", repr=False)

    def review_user(self) -> dict[str, Any]:
        return {"username": self.username, "uid": self.uid, "groups": list(self.groups), "extra": self.extra}


@dataclass(frozen=True)
class Scope:
    """One SubjectAccessReview question (or several that must all be allowed)."""

    name: str
    role: str
    checks: tuple[tuple[str, str], ...]  # (verb, plural)


READ = Scope("deployments:read", "miosa-deployments-read", (("get", meta.DEPLOYMENT_PLURAL), ("list", meta.VERSION_PLURAL)))
PROMOTE = Scope("deployments:write", "miosa-deployments-write", (("patch", meta.DEPLOYMENT_PLURAL),))
PUBLISH = Scope("deployments:write", "miosa-deployments-write", (("create", meta.VERSION_PLURAL),))
SCOPES = (READ, PROMOTE, PUBLISH)


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization`` header, or 401."""
    if not header:
        raise unauthenticated()
    if len(header) > MAX_TOKEN_LENGTH:
        raise unauthenticated("the bearer token is too long")
    match = _BEARER.match(header.strip())
    if not match:
        raise unauthenticated("the Authorization header must be 'Bearer <token>'")
    return match.group(1)


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TtlCache(Generic[T]):
    """A small LRU whose entries expire; the clock is injectable for tests."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_entries, self.clock = ttl, max_entries, clock
        self._entries: OrderedDict[Any, tuple[float, T]] = OrderedDict()

    def get(self, key: Any) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Any, value: T) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (self.clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class ReviewAnswer:
    """A TokenReview's answer: the caller, or None for a token the API server rejected."""

    caller: Caller | None


def caller_from_review(review: dict[str, Any], token: str) -> Caller | None:
    user = reviewed_user(review.get("status") or {})
    if user is None:
        return None
    extra = {key: list(values) for key, values in user.extra.items()}
    return Caller(username=user.username, uid=user.uid, groups=user.groups, extra=extra, token=token)


class Access:
    """TokenReview and SubjectAccessReview through the API's own identity, cached."""

    def __init__(self, kube: Kube, ttl: float, max_entries: int) -> None:
        self.kube = kube
        self._callers: TtlCache[ReviewAnswer] = TtlCache(ttl, max_entries)
        self._decisions: TtlCache[bool] = TtlCache(ttl, max_entries)

    async def authenticate(self, authorization: str | None) -> Caller:
        token = bearer_token(authorization)
        key = token_key(token)
        reviewed = self._callers.get(key)
        if reviewed is None:
            try:
                review = await self.kube.token_review(token)
            except KubeError as exc:  # the API server, or our own identity's rights: not the caller's fault
                raise cluster_unavailable(exc.message) from exc
            reviewed = ReviewAnswer(caller_from_review(review, token))
            self._callers.put(key, reviewed)  # rejections too: a replayed bad token costs no review
        if reviewed.caller is None:
            raise unauthenticated("the Kubernetes API server did not accept this token")
        return reviewed.caller

    async def allowed(self, caller: Caller, scope: Scope, namespace: str) -> bool:
        for verb, plural in scope.checks:
            key = (token_key(caller.token), namespace, verb, plural)
            decision = self._decisions.get(key)
            if decision is None:
                attributes = {"namespace": namespace, "verb": verb, "group": meta.GROUP, "resource": plural}
                decision = await self.kube.access_review(caller.review_user(), attributes)
                self._decisions.put(key, decision)
            if not decision:
                return False
        return True
