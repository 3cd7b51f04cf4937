"""A small static file server for one unpacked release (the container of static pods).

Design decisions:

* **Request paths follow the release's own path rules.** The target is split from its query,
  percent-decoded (invalid UTF-8 is a 404) and checked with ``ingest.normalise_member_path``:
  a path a release could never contain (``..``, backslashes, NUL or control characters) is
  a 404 rather than something to clamp or repair, so encoded tricks (``%2e%2e/``) get
  nowhere.
* **No symlink is followed below the root.** Every lookup walks from the root with
  ``O_NOFOLLOW`` directory descriptors and serves from the descriptor it opened, so what is
  checked is what is sent. Only regular files are served. Fetched releases never contain
  links; this holds even for a tree put there by other means.
* ``/`` serves the entrypoint; a directory serves its ``index.html`` (after a redirect that
  adds the trailing slash, so relative links work); a miss serves the release's
  ``404.html`` with status 404 when there is one, as static hosts do.
* ``/healthz`` (the readiness probe) is 200 ``ok`` only while the root holds the entrypoint
  as a regular file, otherwise 503. A site file of that name is shadowed.
* **Caching that survives rollbacks.** URLs stay the same across versions, so HTML is
  ``no-cache``, fingerprinted assets (``app.3f9a1c2b.js``) are cached for a year and
  everything else for five minutes. ETags are content hashes (computed once per file, on
  first request): mtimes and sizes repeat across builds made with ``SOURCE_DATE_EPOCH``,
  so they cannot tell versions apart, and no ``Last-Modified`` is sent for that reason.
* Content types come from Python's built-in table (not ``/etc/mime.types``, which varies
  between images) plus a few modern types; ``nosniff`` keeps browsers from guessing.
* stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive, a socket timeout against idle or
  slow clients, one access-log line per request on stdout (successful probes are not
  logged). SIGTERM stops the server promptly; Python as PID 1 would otherwise ignore it.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import shutil
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote_to_bytes

from ..ingest.bundle import BundleRejected, normalise_member_path

HEALTH_PATH = "/healthz"
INDEX = "index.html"
NOT_FOUND_PAGE = "404.html"
MAX_PATH_BYTES = 4096
REQUEST_TIMEOUT = 30
"""Seconds a connection may stay silent before its thread is freed."""

CACHE_HTML = "no-cache"
CACHE_FINGERPRINTED = "public, max-age=31536000, immutable"
CACHE_OTHER = "public, max-age=300"

# A name segment of 8+ hash-like characters mixing letters and digits, just before the
# extension (webpack "main.3f9a1c2b.js", vite "index-B4x9Qz1c.css"): content-addressed, so
# safe to cache forever. Requiring both keeps dates ("report-20240101.pdf") and words out.
_FINGERPRINT = re.compile(r"[.-](?=[A-Za-z_]*\d)(?=[0-9_]*[A-Za-z])[0-9A-Za-z_]{8,}\.[0-9A-Za-z]+$")
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block open()
_COPY_CHUNK = 256 << 10


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


def cache_control(name: str, kind: str) -> str:
    if kind.split(";")[0] in _HTML_TYPES:
        return CACHE_HTML
    return CACHE_FINGERPRINTED if _FINGERPRINT.search(name) else CACHE_OTHER


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


def open_below(root: Path, parts: list[str]) -> int | None:
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


@dataclass
class Site:
    """The served tree, and the content-hash ETags of the files served so far."""

    root: Path
    entrypoint: str
    _etags: dict[tuple[int, int, int, int], str] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def healthy(self) -> bool:
        fd = open_below(self.root, self.entrypoint.split("/"))
        if fd is None:
            return False
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def etag(self, fd: int, info: os.stat_result) -> str:
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            known = self._etags.get(key)
        if known is not None:
            return known
        digest, offset = hashlib.sha256(), 0
        while chunk := os.pread(fd, _COPY_CHUNK, offset):  # pread: the caller's offset stays at 0
            digest.update(chunk)
            offset += len(chunk)
        tag = f'"{digest.hexdigest()[:32]}"'
        with self._lock:
            self._etags[key] = tag
        return tag


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    site: Site  # set on the per-server subclass made by make_server
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def version_string(self) -> str:
        return "miosa-static"  # no Python version for the world to see

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _refuse_method(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self._finish_empty()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _respond(self, body: bool) -> None:
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            self._health(body)
            return
        parts = request_parts(self.path)
        if parts is None:
            self._not_found(body)
            return
        self._serve_path(parts or self.site.entrypoint.split("/"), body, is_root=not parts)

    def _serve_path(self, parts: list[str], body: bool, is_root: bool) -> None:
        fd = open_below(self.site.root, parts)
        if fd is not None and stat.S_ISDIR(os.fstat(fd).st_mode) and not is_root:
            os.close(fd)
            if not self.path.split("?", 1)[0].endswith("/"):
                self._redirect_to_directory()
                return
            parts, fd = [*parts, INDEX], open_below(self.site.root, [*parts, INDEX])
        if fd is None or not self._send_file(fd, parts[-1], HTTPStatus.OK, body):
            self._not_found(body)

    def _send_file(self, fd: int, name: str, status: HTTPStatus, body: bool) -> bool:
        """Serve the open descriptor (closing it); False if it is not a regular file."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return False
        with open(fd, "rb", closefd=True) as data:
            kind = content_type(name)
            etag = self.site.etag(fd, info)
            if status == HTTPStatus.OK and etag in _tags(self.headers.get("If-None-Match", "")):
                self.send_response(HTTPStatus.NOT_MODIFIED)
                self._file_headers(kind, etag, name)
                self.end_headers()
                return True
            self.send_response(status)
            self._file_headers(kind, etag, name)
            self.send_header("Content-Length", str(info.st_size))
            self.end_headers()
            if body:
                shutil.copyfileobj(data, self.wfile, _COPY_CHUNK)
        return True

    def _file_headers(self, kind: str, etag: str, name: str) -> None:
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", cache_control(name, kind))
        self.send_header("ETag", etag)
        self.send_header("X-Content-Type-Options", "nosniff")

    def _not_found(self, body: bool) -> None:
        fd = open_below(self.site.root, [NOT_FOUND_PAGE])
        if fd is not None and self._send_file(fd, NOT_FOUND_PAGE, HTTPStatus.NOT_FOUND, body):
            return
        self._send_text(HTTPStatus.NOT_FOUND, "not found\n", body)

    def _health(self, body: bool) -> None:
        if self.site.healthy():
            self._send_text(HTTPStatus.OK, "ok\n", body)
        else:
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, f"{self.site.entrypoint} is not there yet\n", body)

    def _redirect_to_directory(self) -> None:
        path, sep, query = self.path.partition("?")
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        # "//host" would be read as another host by the browser: keep one leading slash.
        self.send_header("Location", "/" + path.lstrip("/") + "/" + sep + query)
        self._finish_empty()

    def _send_text(self, status: HTTPStatus, text: str, body: bool) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _finish_empty(self) -> None:
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if getattr(self, "path", "") == HEALTH_PATH and str(code) == "200":
            return  # readiness probes every few seconds would drown the real traffic
        super().log_request(code, size)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(root: Path, port: int, entrypoint: str = INDEX, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """A bound, not yet serving, server for ``root`` (``port`` 0 picks a free port)."""
    try:
        normal = normalise_member_path(entrypoint, MAX_PATH_BYTES, is_file=True)
    except BundleRejected as exc:
        raise ValueError(f"entrypoint {entrypoint!r}: {exc.message}") from None
    if normal is None:
        raise ValueError(f"entrypoint {entrypoint!r} does not name a file")
    handler = type("SiteHandler", (_Handler,), {"site": Site(Path(os.path.abspath(root)), normal)})
    server_class = _Server6 if ":" in host else _Server
    return server_class((host, port), handler)


def serve(root: Path, port: int, entrypoint: str = INDEX, host: str = "0.0.0.0") -> None:
    """Serve ``root`` until SIGTERM or SIGINT."""
    server = make_server(root, port, entrypoint, host)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stopper(server))
    print(f"serving {root} on {host}:{server.server_address[1]} (entrypoint {entrypoint})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _stopper(server: ThreadingHTTPServer) -> Callable[[int, FrameType | None], None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        # shutdown() waits for serve_forever to return, which runs in this very thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    return stop
