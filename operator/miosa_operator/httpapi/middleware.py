"""ASGI middleware around every request: JSON access log, body guard, security headers.

Pure ASGI (not ``BaseHTTPMiddleware``) so that streamed request bodies stay streamed.

* ``AccessLog`` writes one JSON line per request: method, path, status, duration, bytes
  received, the authenticated user (set by the route as ``request.state.user``) and a
  request id (also returned as ``X-Request-Id``).  Never the ``Authorization`` header.
* ``BodyGuard`` caps every request body: a declared ``Content-Length`` above the cap is
  answered 413 before anything is read, a body that grows past it is cut off (413), and a
  body that stalls longer than the idle timeout is dropped (408).  The publish route gets
  the bundle cap; every other route the small JSON cap, so nobody can make the server
  buffer a large body through a JSON endpoint.
* ``SecurityHeaders``: the web page may only load its own scripts and talk to its own
  origin (CSP), cannot be framed, sends no referrer; every answer is ``nosniff``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import ApiError, Code

# As starlette.types spells them (FastAPI is an ASGIApp of exactly these).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("miosa_operator.httpapi.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        answer = {"status": 500, "bytes_in": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.request":
                answer["bytes_in"] += len(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            access_log.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "msg": "request",
                        "request_id": request_id,
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "query": query[:512],
                        "status": answer["status"],
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "bytes_in": answer["bytes_in"],
                        "user": scope.get("state", {}).get("user"),
                        "client": (scope.get("client") or [None])[0],
                    },
                    ensure_ascii=True,
                )
            )


class BodyGuard:
    def __init__(
        self, app: ASGIApp, *, json_limit: int, bundle_limit: int, idle_timeout: float, is_upload: Callable[[Scope], bool]
    ) -> None:
        self.app, self.json_limit, self.bundle_limit = app, json_limit, bundle_limit
        self.idle_timeout, self.is_upload = idle_timeout, is_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.bundle_limit if self.is_upload(scope) else self.json_limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            error = (
                ApiError(413, Code.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes")
                if declared.isdigit()
                else ApiError(400, Code.INVALID_PARAMETER, "Content-Length is not a number")
            )
            await _answer(send, error)
            return
        received = 0
        finished = False

        async def guarded_receive() -> Message:
            nonlocal received, finished
            if finished:
                return await receive()  # only http.disconnect is left to wait for
            try:
                message = await asyncio.wait_for(receive(), timeout=self.idle_timeout)
            except TimeoutError as exc:
                raise ApiError(
                    408, Code.REQUEST_TIMEOUT, f"the request body stalled for more than {self.idle_timeout:g} s"
                ) from exc
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(413, Code.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes")
                finished = not message.get("more_body", False)
            return message

        await self.app(scope, guarded_receive, send)


_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", []).extend(h for h in _SECURITY_HEADERS if h[0] not in present)
            await send(message)

        await self.app(scope, receive, with_headers)


async def _answer(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
