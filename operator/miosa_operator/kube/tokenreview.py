"""Who holds this bearer token?  The API server's TokenReview, for servers of our own.

The artifact endpoint (and the HTTP API process) authenticate callers by a Kubernetes token
instead of credentials of their own: the API server already issues, rotates and revokes
tokens, and a pod's projected ServiceAccount token is bound to the pod and expires.

Design decisions:

* **Audience first.** A reviewer made with an ``audience`` asks the API server to accept the
  token only if it was issued for that audience, and then also checks that the audience came
  back in ``status.audiences``: an authenticator that ignores audiences (a static token
  file, a webhook) returns none, and such a token is refused.  A token minted for our
  audience is useless against the API server itself, and the API server's own tokens are
  useless here.
* **Results are cached briefly** (by the token's sha256, never the token itself): many pods
  of one rollout present tokens at the same moment, and the API server must not be the
  bottleneck.  Refusals are cached too (shorter), so a flood of bad tokens costs one review
  each per interval.  The cache is bounded; a revoked token may still pass for ``ttl``.
* **Transport faults are not refusals**: ``ReviewUnavailable`` lets a server answer 503 (try
  again) instead of 401, so an API-server hiccup never looks like a bad credential.
* Blocking, like the ``kubernetes`` client it uses: async servers call it in an executor.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
MAX_TOKEN_BYTES = 8 * 1024
"""Anything longer is not a Kubernetes token; refused without asking the API server."""


class ReviewUnavailable(Exception):
    """The API server could not be asked (network, 5xx, throttling): try again later."""


@dataclass(frozen=True)
class Reviewed:
    """An authenticated caller, as the API server describes it."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()

    @property
    def service_account(self) -> tuple[str, str] | None:
        """``(namespace, name)`` when the caller is a ServiceAccount, else None."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, sep, name = self.username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        return (namespace, name) if sep and namespace and name else None

    @property
    def pod_name(self) -> str | None:
        """The pod a bound token was issued for (absent for ``kubectl create token``)."""
        values = self.extra.get(POD_NAME_KEY) or ()
        return values[0] if values else None


Review = Callable[[str, tuple[str, ...]], dict[str, Any]]
"""``(token, audiences) -> TokenReview status as a dict``; raises ``ReviewUnavailable``."""


def api_review(api_client: client.ApiClient, timeout: float = 10.0) -> Review:
    """A ``Review`` through the official client (POST authentication.k8s.io/v1 tokenreviews)."""
    api = client.AuthenticationV1Api(api_client)

    def review(token: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        if audiences:
            body["spec"]["audiences"] = list(audiences)
        try:
            result = api.create_token_review(body, _request_timeout=timeout)
        except ApiException as exc:
            raise ReviewUnavailable(f"TokenReview failed: {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 connection and timeout errors
            raise ReviewUnavailable(f"TokenReview failed: {type(exc).__name__}: {exc}") from None
        status = result.status
        return api_client.sanitize_for_serialization(status) if status is not None else {}

    return review


class TokenReviewer:
    """``authenticate(token)`` → ``Reviewed`` or None (refused); cached for a short while."""

    def __init__(
        self,
        review: Review,
        audience: str | None,
        *,
        ttl: float = 30.0,
        refusal_ttl: float = 5.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._review = review
        self.audience = audience
        self._ttl, self._refusal_ttl, self._max = ttl, refusal_ttl, max_entries
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Reviewed | None]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Reviewed | None:
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii():
            return None
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(key)
                return cached[1]
        audiences = (self.audience,) if self.audience else ()
        result = self._judge(self._review(token, audiences))
        with self._lock:
            self._cache[key] = (now + (self._ttl if result else self._refusal_ttl), result)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return result

    def _judge(self, status: dict[str, Any]) -> Reviewed | None:
        return reviewed_user(status, self.audience)


def reviewed_user(status: dict[str, Any], audience: str | None = None) -> Reviewed | None:
    """The caller a TokenReview's ``status`` vouches for, or None: not authenticated, no user
    name, or (with ``audience``) not issued for that audience.  The one reading of a review,
    for the artifact endpoint (``TokenReviewer``) and the HTTP API (``httpapi.auth``)."""
    if not status.get("authenticated"):
        return None
    audiences = tuple(status.get("audiences") or ())
    if audience and audience not in audiences:
        return None  # an audience-agnostic authenticator vouched for it: not for us
    user = status.get("user") or {}
    username = user.get("username") or ""
    if not username:
        return None
    extra = {str(k): tuple(str(v) for v in values or ()) for k, values in (user.get("extra") or {}).items()}
    return Reviewed(
        username=username,
        uid=user.get("uid") or "",
        groups=tuple(user.get("groups") or ()),
        extra=extra,
        audiences=audiences,
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
