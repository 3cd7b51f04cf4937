"""The static server of static pods: one unpacked release, served to end-customers.

Built on aiohttp's low-level server (its C HTTP parser, llhttp, and one asyncio event loop),
with the site logic of our own.  ``docs/benchmarks.md`` has the measurements against Debian's
nginx serving the same tree and the reasons for keeping our own server.

Design decisions:

* **The tree is immutable.**  The fetch init container unpacked and verified it; the server
  container mounts it read-only.  What a path resolves to (content type, cache rule, ETag,
  and the bytes of files up to ``SMALL_FILE`` while ``cache_bytes`` lasts) is therefore
  worked out once, on the first request, and reused.  Larger files are sent with
  ``sendfile(2)`` from a descriptor opened for that request.
* **Request paths follow the release's own path rules.**  The target is split from its
  query, percent-decoded (invalid UTF-8 is a 404) and checked with
  ``ingest.normalise_member_path``: a path a release could never contain (``..``,
  backslashes, NUL or control characters) is a 404, so encoded tricks get nowhere.
* **No symlink is followed, nothing is listed.**  Every lookup walks from the root with
  ``O_NOFOLLOW`` descriptors and serves from the descriptor it opened; only regular files
  are served; a directory serves its ``index.html`` (after a redirect adding the slash) or
  the 404 page, never a listing.
* ``/`` serves the entrypoint; a miss serves the release's ``404.html`` with status 404
  when there is one.  ``/healthz`` (readiness and liveness) is 200 only while the entrypoint
  is a regular file under the root.
* **Caching that survives rollbacks.**  URLs stay the same across versions.  HTML is
  ``no-cache``; a file whose *name* carries a content hash is ``immutable`` for a year; every
  other file must be revalidated (``max-age=0, must-revalidate``, as Vercel and Netlify do),
  so a rollback reaches returning visitors at once.  The content-hash rule (``fingerprinted``):
  a run of 8 or more lowercase hex digits, with at least one digit and one letter, standing
  between the start of the name, dots or dashes and followed by a dot or a dash
  (``main.3f9a1c2b.js``, ``app-5d41402abc4b2a76.css``, ``3f9a1c2b7e.png``; not
  ``hero-banner01.jpg``, ``report-20240101.pdf`` or ``deadbeef.js``).  Bundlers that hash
  with other alphabets (Rollup/Vite's default base64url) can emit hex
  (``output.hashCharacters: "hex"``).  ETags are content hashes, because mtimes and sizes
  repeat across reproducible builds; no ``Last-Modified`` is sent for the same reason.
* **Hostile clients.**  A request carrying a body is answered and its connection closed, so
  a body can never be read as a second request.  A connection must deliver each request's
  head within ``REQUEST_TIMEOUT`` (aiohttp's keep-alive timer covers the time before the
  first request and between requests), a client that stops reading for ``SEND_TIMEOUT``
  loses its connection, at most ``max_connections`` are open (more are answered 503 and
  closed), and slow clients cost a few kilobytes each, never a thread.
* **Access log**: one line per request on stdout, nginx's "combined" format; every byte of
  request-controlled text outside printable ASCII (and ``"`` and ``\\``) is written as
  ``\\xHH``, so a request cannot forge or break log lines.  Successful probes are not logged.
* Single byte ranges (``Range: bytes=…``, ``If-Range``) are served, as video needs them.
* SIGTERM stops the server promptly (aiohttp's runner handles it; PID 1 ignores it otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import re
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..ingest.bundle import BundleRejected, normalise_member_path

HEALTH_PATH = "/healthz"
INDEX = "index.html"
NOT_FOUND_PAGE = "404.html"
MAX_PATH_BYTES = 4096
REQUEST_TIMEOUT = 15.0
"""Seconds a connection may take to send a request's head (and may idle between requests)."""
SEND_TIMEOUT = 30.0
"""Seconds a client may go without reading before its connection is dropped."""
MAX_CONNECTIONS = 2048
SMALL_FILE = 256 * 1024
"""Files up to this size are kept in memory (within ``cache_bytes``) after their first request."""
CACHE_BYTES = 32 << 20
SERVER_NAME = "miosa-static"

CACHE_HTML = "no-cache"
CACHE_FINGERPRINTED = "public, max-age=31536000, immutable"
CACHE_OTHER = "public, max-age=0, must-revalidate"

_FINGERPRINT = re.compile(r"(?:^|[.-])(?=[0-9a-f]*[a-f])(?=[a-f]*[0-9])[0-9a-f]{8,}(?=[.-])")
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block open()
_CHUNK = 1 << 20
_SENDFILE_CHUNK = 8 << 20


def _mime_table() -> mimetypes.MimeTypes:
    table = mimetypes.MimeTypes()  # built-in defaults only; the system files vary per image
    for ext, kind in {
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".webmanifest": "application/manifest+json",
        ".woff": "font/woff",
        ".woff2": "font/woff2",
        ".avif": "image/avif",
        ".webp": "image/webp",
        ".map": "application/json",
    }.items():
        table.add_type(kind, ext)
    return table


_MIME = _mime_table()


def content_type(name: str) -> str:
    kind, encoding = _MIME.guess_type(name, strict=False)
    if kind is None or encoding is not None:  # "x.svgz", "x.tar.gz": bytes, not the inner type
        return "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/json", "application/manifest+json", "image/svg+xml"):
        return f"{kind}; charset=utf-8"
    return kind


def fingerprinted(name: str) -> bool:
    """Whether a file name carries a content hash (the rule in the module docstring)."""
    return _FINGERPRINT.search(name.rsplit("/", 1)[-1]) is not None


def cache_control(name: str, kind: str) -> str:
    if kind.split(";")[0] in _HTML_TYPES:
        return CACHE_HTML
    return CACHE_FINGERPRINTED if fingerprinted(name) else CACHE_OTHER


def request_parts(target: str) -> list[str] | None:
    """The path components a request names (``[]`` for ``/``), or None if it cannot be a file."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None  # absolute-form or garbage: not a path inside this site
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return None
    relative = decoded.lstrip("/")
    if not relative:
        return []
    try:
        normal = normalise_member_path(relative, MAX_PATH_BYTES, is_file=False)
    except BundleRejected:
        return None
    return normal.split("/") if normal else []


# --------------------------------------------------------------------------- the tree


def open_below(root: Path, parts: list[str] | tuple[str, ...]) -> int | None:
    """A read descriptor of ``root/parts…`` or None; never follows a symlink below ``root``."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    for index, part in enumerate(parts):
        flags = _FILE_FLAGS if index == len(parts) - 1 else _DIR_FLAGS
        try:
            child = os.open(part, flags, dir_fd=fd)
        except OSError:  # missing, a symlink (ELOOP), not a directory...
            return None
        finally:
            os.close(fd)
        fd = child
    return fd


@dataclass(frozen=True)
class Entry:
    """What a request path resolved to: a regular file, or a directory (``is_dir``)."""

    parts: tuple[str, ...]
    is_dir: bool = False
    size: int = 0
    content_type: str = ""
    cache_control: str = ""
    etag: str = ""
    body: bytes | None = None
    """The whole file, for small files while the cache budget lasts."""


@dataclass
class Site:
    """The served tree and what its paths resolved to so far."""

    root: Path
    entrypoint: str
    cache_bytes: int = CACHE_BYTES
    _entries: dict[tuple[str, ...], Entry] = field(default_factory=dict, init=False)
    _cached: int = field(default=0, init=False)
    _budget: threading.Lock = field(default_factory=threading.Lock, init=False)

    def healthy(self) -> bool:
        fd = open_below(self.root, self.entrypoint.split("/"))
        if fd is None:
            return False
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def known(self, parts: tuple[str, ...]) -> Entry | None:
        return self._entries.get(parts)

    def resolve(self, parts: tuple[str, ...]) -> Entry | None:
        """Blocking (opens, reads, hashes): run it off the event loop."""
        fd = open_below(self.root, parts)
        if fd is None:
            return None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                entry = Entry(parts, is_dir=True)
            elif stat.S_ISREG(info.st_mode):
                entry = self._file_entry(parts, fd, info.st_size)
            else:
                return None
        finally:
            os.close(fd)
        self._entries[parts] = entry
        return entry

    def _file_entry(self, parts: tuple[str, ...], fd: int, size: int) -> Entry:
        name = parts[-1] if parts else ""
        kind = content_type(name)
        digest, offset, chunks = hashlib.sha256(), 0, []
        with self._budget:
            keep = size <= SMALL_FILE and self._cached + size <= self.cache_bytes
            if keep:
                self._cached += size  # reserved now, so concurrent first requests cannot overspend
        while chunk := os.pread(fd, _CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
            if keep:
                chunks.append(chunk)
        body = b"".join(chunks) if keep and offset == size else None
        return Entry(parts, False, offset, kind, cache_control(name, kind), f'"{digest.hexdigest()[:32]}"', body)


# --------------------------------------------------------------------------- HTTP


class SiteHandler:
    """The request handler given to aiohttp's low-level server."""

    def __init__(self, site: Site, send_timeout: float = SEND_TIMEOUT) -> None:
        self.site = site
        self.send_timeout = send_timeout

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self._respond(request)
        response.headers["Server"] = SERVER_NAME
        if _has_body(request):
            response.force_close()  # never read what follows as another request
        if isinstance(response, _FileStream):
            return response  # sends with a timeout per chunk
        try:
            async with asyncio.timeout(self.send_timeout):
                await response.prepare(request)
                await response.write_eof()
        except TimeoutError:
            _abort(request)
        return response

    async def _respond(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed\n", {"Allow": "GET, HEAD"})
        target = request.raw_path
        if target.split("?", 1)[0] == HEALTH_PATH:
            if self.site.healthy():
                return _text(200, "ok\n")
            return _text(503, f"{self.site.entrypoint} is not there yet\n")
        parts = request_parts(target)
        if parts is None:
            return await self._not_found(request)
        is_root = not parts
        entry = await self._lookup(tuple(parts or self.site.entrypoint.split("/")))
        if entry is not None and entry.is_dir and not is_root:
            if not target.split("?", 1)[0].endswith("/"):
                return _redirect_to_directory(target)
            entry = await self._lookup((*parts, INDEX))
        if entry is None or entry.is_dir:
            return await self._not_found(request)
        return self._file(request, entry, 200)

    async def _lookup(self, parts: tuple[str, ...]) -> Entry | None:
        known = self.site.known(parts)
        if known is not None:
            return known
        return await asyncio.get_running_loop().run_in_executor(None, self.site.resolve, parts)

    async def _not_found(self, request: web.BaseRequest) -> web.StreamResponse:
        page = await self._lookup((NOT_FOUND_PAGE,))
        if page is not None and not page.is_dir:
            return self._file(request, page, 404)
        return _text(404, "not found\n")

    def _file(self, request: web.BaseRequest, entry: Entry, status: int) -> web.StreamResponse:
        headers = {
            "Content-Type": entry.content_type,
            "Cache-Control": entry.cache_control,
            "ETag": entry.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if status == 200:
            headers["Accept-Ranges"] = "bytes"
            if entry.etag in _tags(request.headers.get("If-None-Match", "")):
                return web.Response(status=304, headers=headers)
            wanted = _range(request, entry)
            if wanted == "unsatisfiable":
                return _text(416, "range not satisfiable\n", {"Content-Range": f"bytes */{entry.size}"})
            if isinstance(wanted, tuple):
                start, stop = wanted
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{entry.size}"
                return self._body(entry, headers, 206, start, stop)
        return self._body(entry, headers, status, 0, entry.size)

    def _body(self, entry: Entry, headers: dict[str, str], status: int, start: int, stop: int) -> web.StreamResponse:
        if entry.body is not None:
            return web.Response(status=status, body=entry.body[start:stop], headers=headers)
        return _FileStream(self.site.root, entry.parts, start, stop, self.send_timeout, status=status, headers=headers)


class _FileStream(web.StreamResponse):
    """A large file sent with sendfile(2) from a descriptor opened (without following links) now."""

    def __init__(self, root: Path, parts: tuple[str, ...], start: int, stop: int, send_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._site_root, self._parts, self._first, self._end = root, parts, start, stop
        self._send_timeout = send_timeout
        self.content_length = stop - start
        self.sent = 0

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self.prepared:
            return await super().prepare(request)
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(None, open_below, self._site_root, self._parts)
        if fd is None:  # it was there a moment ago: the tree changed under us
            self.set_status(404)
            self.content_length = 0
            return await super().prepare(request)
        with open(fd, "rb", closefd=True) as data:
            writer = await super().prepare(request)
            if request.method == "HEAD":
                return writer
            try:
                await _send(self, request, data, self._first, self._end, self._send_timeout)
            except (TimeoutError, ConnectionError, OSError):
                _abort(request)
        return writer


async def _send(response: _FileStream, request: web.BaseRequest, data: Any, start: int, stop: int, timeout: float) -> None:
    loop, transport = asyncio.get_running_loop(), request.transport
    offset = start
    while offset < stop and transport is not None and not transport.is_closing():
        count = min(_SENDFILE_CHUNK, stop - offset)
        async with asyncio.timeout(timeout):
            try:
                sent = await loop.sendfile(transport, data, offset, count)
            except NotImplementedError:  # a transport without sendfile (TLS, some event loops)
                data.seek(offset)
                chunk = data.read(min(count, _CHUNK))
                await response.write(chunk)
                sent = len(chunk)
        if not sent:
            raise ConnectionResetError("the client went away")
        offset += sent
        response.sent += sent  # for the access log, also when the client is dropped half-way


def _range(request: web.BaseRequest, entry: Entry) -> tuple[int, int] | str | None:
    """``(start, stop)`` of a satisfiable single byte range, "unsatisfiable", or None (send it all)."""
    if "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != entry.etag:
        return None  # the client's copy is another version: send the whole file
    try:
        wanted = request.http_range
    except ValueError:
        return None  # multiple or malformed ranges: ignoring Range is always allowed
    start, stop = wanted.start, wanted.stop
    if start is None:
        return None
    if start < 0:
        start = max(entry.size + start, 0)
    stop = entry.size if stop is None else min(stop, entry.size)
    if start >= entry.size or start >= stop:
        return "unsatisfiable"
    return start, stop


def _has_body(request: web.BaseRequest) -> bool:
    length = request.headers.get("Content-Length")
    return "Transfer-Encoding" in request.headers or (length is not None and length.strip() not in ("", "0"))


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=text.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", **(headers or {})},
    )


def _redirect_to_directory(target: str) -> web.Response:
    path, sep, query = target.partition("?")
    # "//host" would be read as another host by the browser: keep one leading slash.
    return web.Response(status=301, headers={"Location": "/" + path.lstrip("/") + "/" + sep + query, "Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- access log


_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def escape(text: str) -> str:
    """Request-controlled text for one log line: printable ASCII stays, the rest is ``\\xHH``."""
    if _PLAIN.fullmatch(text):
        return text
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if 0x20 <= byte < 0x7F and byte not in (0x22, 0x5C):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02X}")
    return "".join(out)


class AccessLog(AbstractAccessLogger):
    """nginx's "combined" format on stdout, every request-controlled field escaped."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        if response.status == 200 and request.raw_path == HEALTH_PATH:
            return  # readiness probes every few seconds would drown the real traffic
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        line = (
            f'{request.remote or "-"} - - [{when}] "{escape(request.method)} {escape(request.raw_path)} {version}" '
            f"{response.status} {getattr(response, 'sent', None) or response.body_length} "
            f'"{escape(request.headers.get("Referer", "-"))}" "{escape(request.headers.get("User-Agent", "-"))}" '
            f"{time_taken:.6f}\n"
        )
        self.emit(line)

    def emit(self, line: str) -> None:
        sys.stdout.write(line)


# --------------------------------------------------------------------------- the server


class _CappedServer(web.Server):
    """aiohttp's low-level server, answering connections beyond ``max_connections`` with 503."""

    def __init__(
        self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections

    def __call__(self) -> Any:
        if len(self.connections) >= self.max_connections:
            return _Refuse()
        return super().__call__()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n")
        transport.close()


def make_server(
    root: Path,
    entrypoint: str = INDEX,
    *,
    cache_bytes: int = CACHE_BYTES,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    access_log: bool = True,
) -> web.Server:
    """The aiohttp protocol factory serving ``root`` (not yet listening; needs a running loop)."""
    site = Site(Path(os.path.abspath(root)), checked_entrypoint(entrypoint), cache_bytes)
    logging_kwargs: dict[str, Any] = (
        {"access_log_class": AccessLog, "access_log": _stdout_logger()} if access_log else {"access_log": None}
    )
    return _CappedServer(
        SiteHandler(site, send_timeout),
        max_connections,
        keepalive_timeout=request_timeout,
        logger=_SERVER_LOG,
        lingering_time=0,
        max_line_size=MAX_PATH_BYTES * 3 + 64,
        max_field_size=8190,
        **logging_kwargs,
    )


def checked_entrypoint(entrypoint: str) -> str:
    """The entrypoint as a normal relative file path; ValueError if a release could not hold it."""
    try:
        normal = normalise_member_path(entrypoint, MAX_PATH_BYTES, is_file=True)
    except BundleRejected as exc:
        raise ValueError(f"entrypoint {entrypoint!r}: {exc.message}") from None
    if normal is None:
        raise ValueError(f"entrypoint {entrypoint!r} does not name a file")
    return normal


def _stdout_logger() -> Any:
    return logging.getLogger("miosa_operator.serve.access")  # required by aiohttp; AccessLog writes to stdout


class NotOurError(logging.Filter):
    """A malformed request is the client's doing: it is in the access log as a 400, and must
    not flood the error log (aiohttp logs each one with a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Error handling request")


_SERVER_LOG = logging.getLogger("miosa_operator.serve.server")
_SERVER_LOG.addFilter(NotOurError())


async def run(
    root: Path,
    port: int,
    entrypoint: str = INDEX,
    host: str = "0.0.0.0",
    *,
    cache_bytes: int = CACHE_BYTES,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout: float = REQUEST_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or forever); ``ready`` gets the bound port."""
    server = make_server(
        root,
        entrypoint,
        cache_bytes=cache_bytes,
        max_connections=max_connections,
        request_timeout=request_timeout,
        send_timeout=send_timeout,
    )
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    site = web.SockSite(runner, sock)
    await site.start()
    bound = sock.getsockname()[1]
    if ready is not None:
        ready(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


def serve(root: Path, port: int, entrypoint: str = INDEX, host: str = "0.0.0.0", *, cache_bytes: int = CACHE_BYTES) -> None:
    """Serve ``root`` until SIGTERM or SIGINT."""
    checked_entrypoint(entrypoint)  # refuse bad arguments before anything listens
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # each access-log line reaches the container log at once

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def announce(bound: int) -> None:
            print(f"serving {root} on {host}:{bound} (entrypoint {entrypoint})", flush=True)

        await run(root, port, entrypoint, host, cache_bytes=cache_bytes, ready=announce, stop=stop)

    asyncio.run(main())
