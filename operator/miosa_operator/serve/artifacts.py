"""The artifact endpoint: a tenant's pods download that tenant's releases, and nothing else.

Static pods never hold store credentials.  Their ``fetch`` init container presents the pod's
projected ServiceAccount token (audience ``miosa-artifacts`` by default) to this endpoint,
which runs inside the operator process, next to the store credentials that never leave it:

    GET /v1/releases/<namespace>/<dep id>/<ver id>      Authorization: Bearer <token>

Design decisions:

* **The token's namespace is the tenant.**  The API server vouches for the token
  (``kube.tokenreview``: audience-restricted TokenReview); a ServiceAccount of namespace N
  may read ``<releases>/N/<dep id>/<ver id>/dist.tar.zst`` and nothing else: no build log,
  no listing, no other key, no write.  Every id is checked against its format, so a path
  can never name anything but a release.
* **No oracle.**  Another tenant's release and a release that does not exist get the same
  404 with the same body, and the other tenant's answer is given without touching the store,
  so it cannot depend on whether the object exists.  A missing or refused token is a 401
  whatever the path.
* **Streams, never buffers.**  The release is read from the store in chunks on a thread
  pool of its own and written with back-pressure; a client that stops reading for
  ``idle_timeout`` seconds loses its connection.  At most ``max_streams`` downloads run at
  once and at most ``max_streams_per_tenant`` per namespace, so one tenant's rollout of a
  hundred pods cannot take every slot (the others get 429 and retry).
* **Its own event loop on its own thread.**  kopf's loop runs the operator's watches and
  handlers; a burst of downloads must neither wait for them nor slow them down.  Store and
  TokenReview calls are blocking and run on two small thread pools of the endpoint's own.
* Faults of the store or the API server are 503 (retry), never 404: a pod must not give up
  on a release because S3 blinked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import web

from ..kube.tokenreview import Reviewed, ReviewUnavailable, TokenReviewer, bearer_token
from ..store.base import ArtifactNotFound, StoreError
from .releases import RELEASE_OBJECT, parse_release_path
from .server import NotOurError

if TYPE_CHECKING:
    from ..store.base import ArtifactStore

log = logging.getLogger(__name__)
_HTTP_LOG = logging.getLogger(f"{__name__}.http")
_HTTP_LOG.addFilter(NotOurError())

CHUNK = 256 * 1024
NOT_FOUND = "no such release\n"


@dataclass(frozen=True)
class EndpointLimits:
    max_streams: int = 32
    max_streams_per_tenant: int = 4
    max_pending_reviews: int = 64
    idle_timeout: float = 60.0


class _Slots:
    """Concurrent downloads, in total and per tenant (touched only on the endpoint's loop)."""

    def __init__(self, limits: EndpointLimits) -> None:
        self._limits = limits
        self._per_tenant: Counter[str] = Counter()
        self.total = 0

    def take(self, tenant: str) -> bool:
        if self.total >= self._limits.max_streams or self._per_tenant[tenant] >= self._limits.max_streams_per_tenant:
            return False
        self.total += 1
        self._per_tenant[tenant] += 1
        return True

    def give_back(self, tenant: str) -> None:
        self.total -= 1
        self._per_tenant[tenant] -= 1
        if not self._per_tenant[tenant]:
            del self._per_tenant[tenant]


class ArtifactEndpoint:
    """The aiohttp application and the thread that serves it."""

    def __init__(
        self,
        store: ArtifactStore,
        releases_uri: str,
        reviewer: TokenReviewer,
        *,
        host: str = "0.0.0.0",
        port: int = 8081,
        limits: EndpointLimits = EndpointLimits(),
    ) -> None:
        self.store, self.releases_uri, self.reviewer = store, releases_uri.rstrip("/"), reviewer
        self.host, self.port, self.limits = host, port, limits
        self._slots = _Slots(limits)
        self._pending_reviews = 0
        self._store_pool = ThreadPoolExecutor(max_workers=limits.max_streams, thread_name_prefix="artifacts-store")
        self._review_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="artifacts-review")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ the application
    def application(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_get("/healthz", self._health)
        app.router.add_route("*", "/{tail:.*}", self._release)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _release(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _text(405, "only GET\n", headers={"Allow": "GET, HEAD"})
        try:
            tenant = await self._tenant(request)
        except _Refused as refused:
            return refused.response
        release = parse_release_path(request.path)
        if release is None or release[0] != tenant:
            return _text(404, NOT_FOUND)  # another tenant's release looks exactly like a missing one
        if not self._slots.take(tenant):
            return _text(429, "too many downloads at once, retry\n", headers={"Retry-After": "2"})
        try:
            return await self._stream(request, "/".join((self.releases_uri, *release, RELEASE_OBJECT)), tenant)
        finally:
            self._slots.give_back(tenant)

    async def _tenant(self, request: web.Request) -> str:
        """The namespace of the ServiceAccount whose token the request carries; ``_Refused`` otherwise."""
        token = bearer_token(request.headers.get("Authorization"))
        reviewed = await self._review(token) if token else None
        account = reviewed.service_account if reviewed else None
        if account is None:
            audience = self.reviewer.audience or "kubernetes"
            raise _Refused(
                _text(
                    401,
                    "a ServiceAccount token for this endpoint's audience is required\n",
                    headers={"WWW-Authenticate": f'Bearer realm="{audience}"'},
                )
            )
        return account[0]

    async def _review(self, token: str) -> Reviewed | None:
        if self._pending_reviews >= self.limits.max_pending_reviews:
            raise _Refused(_text(503, "too many token reviews in flight, retry\n", headers={"Retry-After": "1"}))
        self._pending_reviews += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._review_pool, self.reviewer.authenticate, token)
        except ReviewUnavailable as exc:
            log.warning("artifact endpoint: %s", exc)
            raise _Refused(_text(503, "cannot check the token right now, retry\n", headers={"Retry-After": "2"})) from None
        finally:
            self._pending_reviews -= 1

    async def _stream(self, request: web.Request, uri: str, tenant: str) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            info = await loop.run_in_executor(self._store_pool, self.store.head, uri)
            if info is None:
                return _text(404, NOT_FOUND)
            source: BinaryIO = await loop.run_in_executor(self._store_pool, self.store.open_read, uri)
        except ArtifactNotFound:
            return _text(404, NOT_FOUND)
        except StoreError as exc:
            log.warning("artifact endpoint: cannot read %s: %s", uri, exc)
            return _text(503, "the store cannot be read right now, retry\n", headers={"Retry-After": "5"})
        response = web.StreamResponse(
            headers={"Content-Type": "application/zstd", "Content-Length": str(info.size), "Cache-Control": "no-store"}
        )
        sent = 0
        try:
            await response.prepare(request)
            if request.method == "GET":
                while chunk := await loop.run_in_executor(self._store_pool, source.read, CHUNK):
                    async with asyncio.timeout(self.limits.idle_timeout):
                        await response.write(chunk)
                    sent += len(chunk)
            if sent != info.size and request.method == "GET":
                raise ConnectionAbortedError(f"sent {sent} of {info.size} bytes")
            await response.write_eof()
        except (TimeoutError, StoreError, OSError, ConnectionError) as exc:
            # Headers are out: the only honest signal left is a cut connection (the client sees
            # fewer bytes than Content-Length, and its checksum would catch anything else).
            log.warning("artifact endpoint: %s to %s aborted after %d bytes: %s", uri, request.remote, sent, exc)
            if request.transport is not None:
                request.transport.abort()
        finally:
            await loop.run_in_executor(self._store_pool, source.close)
        log.info("artifact endpoint: %s sent %s (%d bytes, %.2f s)", tenant, uri, sent, time.monotonic() - started)
        return response

    # ------------------------------------------------------------------ running it
    def start(self, timeout: float = 10.0) -> None:
        """Listen on a thread of its own; returns once listening (raises if it cannot)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="artifact-endpoint", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the artifact endpoint did not start in time")
        if failure:
            raise RuntimeError(f"the artifact endpoint cannot listen on {self.host}:{self.port}: {failure[0]}")

    async def _serve(self, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5,
            logger=_HTTP_LOG,
            keepalive_timeout=15,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            if self.port == 0:
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            log.info("artifact endpoint listening on %s:%d (audience %s)", self.host, self.port, self.reviewer.audience)
            ready.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._store_pool.shutdown(wait=False, cancel_futures=True)
        self._review_pool.shutdown(wait=False, cancel_futures=True)


class _Refused(Exception):
    """Stop handling the request and send ``response``."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, headers={"Cache-Control": "no-store", **(headers or {})})
