"""The static server, as end-customers' browsers and hostile clients reach it (real sockets).

Each test runs the real server (``serve.server.run``) on its own event loop thread and talks
to it over loopback with ``http.client`` or raw sockets, so what is asserted is what goes
over the wire.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from miosa_operator.serve import server as static
from miosa_operator.serve.server import (
    CACHE_FINGERPRINTED,
    CACHE_HTML,
    CACHE_OTHER,
    SMALL_FILE,
    checked_entrypoint,
    escape,
    fingerprinted,
    request_parts,
)

BIG = bytes(range(256)) * (SMALL_FILE // 256 * 3 + 7)  # sent with sendfile, not from memory


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    for name, data in {
        "index.html": b"<h1>home</h1>",
        "css/x.css": b"a{}",
        "docs/index.html": b"<h1>docs</h1>",
        "app.3f9a1c2b.js": b"console.log(1)",
        "hero-banner01.jpg": b"\xff\xd8jpeg",
        "data.json": b"{}",
        "video.bin": BIG,
        "404.html": b"<h1>custom 404</h1>",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (root / "link.txt").symlink_to(secret)
    (root / "linkdir").symlink_to(tmp_path)
    return root


@contextmanager
def running(root: Path, **kwargs: Any) -> Iterator[tuple[str, int]]:
    loop = asyncio.new_event_loop()
    ready, ports, stop = threading.Event(), [], []

    def main() -> None:
        async def go() -> None:
            stop.append(asyncio.Event())
            await static.run(
                root, 0, host="127.0.0.1", ready=lambda port: (ports.append(port), ready.set()), stop=stop[0], **kwargs
            )

        loop.run_until_complete(go())
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10), "the server did not start"
    try:
        yield "127.0.0.1", ports[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(static.AccessLog, "emit", lambda self, line: lines.append(line))
    return lines


@pytest.fixture
def server(site: Path, log_lines: list[str]) -> Iterator[tuple[str, int]]:
    with running(site) as address:
        yield address


def get(address: tuple[str, int], path: str, method: str = "GET", **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(*address, timeout=5)
    connection.request(method, path, headers=headers)  # sent as is: no client-side normalisation
    response = connection.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    connection.close()
    return response


def body(response: http.client.HTTPResponse) -> bytes:
    return response.body  # type: ignore[attr-defined,no-any-return]


def exchange(address: tuple[str, int], raw: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes, read until the server closes or stays silent for ``wait`` seconds."""
    with socket.create_connection(address, timeout=wait) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


# --------------------------------------------------------------------------- serving


def test_root_serves_the_entrypoint(server: tuple[str, int]) -> None:
    response = get(server, "/")
    assert (response.status, body(response)) == (200, b"<h1>home</h1>")
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Cache-Control") == CACHE_HTML
    assert response.getheader("Content-Length") == str(len(b"<h1>home</h1>"))
    assert response.getheader("Server") == "miosa-static"
    assert response.getheader("Last-Modified") is None


def test_content_types_and_caching(server: tuple[str, int]) -> None:
    css = get(server, "/css/x.css?v=1")
    assert (css.status, body(css)) == (200, b"a{}")
    assert css.getheader("Content-Type") == "text/css; charset=utf-8"
    assert css.getheader("Cache-Control") == CACHE_OTHER
    js = get(server, "/app.3f9a1c2b.js")
    assert js.getheader("Content-Type") == "text/javascript; charset=utf-8"
    assert js.getheader("Cache-Control") == CACHE_FINGERPRINTED
    hero = get(server, "/hero-banner01.jpg")
    assert hero.getheader("Content-Type") == "image/jpeg" and hero.getheader("Cache-Control") == CACHE_OTHER
    assert get(server, "/data.json").getheader("Content-Type") == "application/json; charset=utf-8"
    assert get(server, "/docs/").getheader("Cache-Control") == CACHE_HTML


@pytest.mark.parametrize(
    ("name", "immutable"),
    [
        ("main.3f9a1c2b.js", True),  # webpack / CRA
        ("app-5d41402abc4b2a76.css", True),  # next.js chunks
        ("3f9a1c2b7e.png", True),  # the hash is the whole stem
        ("main.0123456789abcdef0123.chunk.js", True),
        ("styles.min.a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2.css", True),  # hugo sha256
        ("hero-banner01.jpg", False),  # letters outside hex
        ("report-20240101.pdf", False),  # a date: digits only
        ("deadbeef.js", False),  # a word: letters only
        ("chunk.a1b2c3d.js", False),  # 7 characters
        ("main.3F9A1C2B.js", False),  # uppercase is not how bundlers write hex
        ("logo.png", False),
        ("a1b2c3d4e5", False),  # not followed by a dot or dash: the extension, if anything
        ("index-B4x9Qz1c.css", False),  # base64url (Vite's default): not recognised
        ("img_3f9a1c2b.png", False),  # underscores do not delimit
    ],
)
def test_fingerprint_rule(name: str, immutable: bool) -> None:
    assert fingerprinted(name) is immutable
    assert fingerprinted(f"assets/{name}") is immutable
    assert fingerprinted(f"3f9a1c2b-dir/{name}") is immutable  # only the file name counts


@pytest.mark.parametrize(
    "path",
    [
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e%2fsecret.txt",
        "/css/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/index.html%00.css",
        "/%ff",
        "/link.txt",  # symlink to a file outside the root
        "/linkdir/secret.txt",  # through a symlinked directory
        "/linkdir/",
        "/nope.html",
    ],
)
def test_traversal_links_and_misses_are_404(server: tuple[str, int], path: str) -> None:
    response = get(server, path)
    assert response.status == 404
    assert b"secret" not in body(response)
    assert body(response) == b"<h1>custom 404</h1>"  # the release's own 404 page


def test_no_directory_listing(server: tuple[str, int]) -> None:
    listing = get(server, "/css/")  # a directory without index.html
    assert listing.status == 404 and b"x.css" not in body(listing)


def test_healthz_follows_the_entrypoint(site: Path, server: tuple[str, int], log_lines: list[str]) -> None:
    ok = get(server, "/healthz")
    assert (ok.status, body(ok)) == (200, b"ok\n")
    (site / "index.html").unlink()
    assert get(server, "/healthz").status == 503
    assert [line for line in log_lines if "/healthz" in line] == [line for line in log_lines if " 503 " in line]


def test_directories_redirect_then_serve_their_index(server: tuple[str, int]) -> None:
    moved = get(server, "/docs?x=1")
    assert moved.status == 301 and moved.getheader("Location") == "/docs/?x=1"
    assert get(server, "//docs").getheader("Location") == "/docs/"  # never "//docs/", another host
    docs = get(server, "/docs/")
    assert (docs.status, body(docs)) == (200, b"<h1>docs</h1>")


def test_head_etag_and_methods(server: tuple[str, int]) -> None:
    head = get(server, "/css/x.css", method="HEAD")
    assert head.status == 200 and body(head) == b"" and head.getheader("Content-Length") == "3"
    etag = head.getheader("ETag")
    assert etag and etag == get(server, "/css/x.css").getheader("ETag")
    assert get(server, "/css/x.css", **{"If-None-Match": etag}).status == 304
    assert get(server, "/css/x.css", **{"If-None-Match": '"other"'}).status == 200
    post = get(server, "/", method="POST")
    assert post.status == 405 and post.getheader("Allow") == "GET, HEAD"


def test_large_files_whole_and_in_ranges(server: tuple[str, int]) -> None:
    whole = get(server, "/video.bin")
    assert whole.status == 200 and body(whole) == BIG and whole.getheader("Accept-Ranges") == "bytes"
    etag = whole.getheader("ETag")
    part = get(server, "/video.bin", Range="bytes=1000-1999")
    assert part.status == 206 and body(part) == BIG[1000:2000]
    assert part.getheader("Content-Range") == f"bytes 1000-1999/{len(BIG)}"
    tail = get(server, "/video.bin", Range="bytes=-10")
    assert (tail.status, body(tail)) == (206, BIG[-10:])
    assert get(server, "/video.bin", Range=f"bytes={len(BIG)}-").status == 416
    stale = get(server, "/video.bin", Range="bytes=0-9", **{"If-Range": '"another-version"'})
    assert stale.status == 200 and body(stale) == BIG
    assert get(server, "/video.bin", Range="bytes=0-9", **{"If-Range": etag or ""}).status == 206
    small = get(server, "/css/x.css", Range="bytes=1-")
    assert (small.status, body(small)) == (206, b"{}")
    head = get(server, "/video.bin", method="HEAD")
    assert head.getheader("Content-Length") == str(len(BIG)) and body(head) == b""


def test_custom_entrypoint_and_plain_404(tmp_path: Path) -> None:
    (tmp_path / "app.html").write_bytes(b"app")
    with running(tmp_path, entrypoint="app.html") as address:
        assert body(get(address, "/")) == b"app"
        assert get(address, "/healthz").status == 200
        missing = get(address, "/missing")
        assert (missing.status, body(missing)) == (404, b"not found\n")


@pytest.mark.parametrize("entrypoint", ["../x.html", "/abs.html", "", "dir/"])
def test_unsafe_entrypoints_are_refused(entrypoint: str) -> None:
    with pytest.raises(ValueError, match=r"^entrypoint "):
        checked_entrypoint(entrypoint)


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("/", []),
        ("/a/b.css?q#f", ["a", "b.css"]),
        ("//a/./b", ["a", "b"]),
        ("/a%20b", ["a b"]),
        ("/../a", None),
        ("http://x/a", None),
        ("/a\\b", None),
    ],
)
def test_request_parts(target: str, parts: list[str] | None) -> None:
    assert request_parts(target) == parts


# --------------------------------------------------------------------------- hostile clients


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: {length}\r\n",
        "Transfer-Encoding: chunked\r\n",
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_request_body_is_never_read_as_a_second_request(server: tuple[str, int], framing: str, method: str) -> None:
    smuggled = b"GET /css/x.css HTTP/1.1\r\nHost: x\r\n\r\n"
    payload = smuggled if "Content-Length" in framing else b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    head = f"{method} / HTTP/1.1\r\nHost: x\r\n{framing.format(length=len(payload))}\r\n".encode()
    received = exchange(server, head + payload)
    assert received.count(b"HTTP/1.1 ") == 1, received
    assert b"a{}" not in received


def test_http10_keep_alive_answers_every_request(server: tuple[str, int]) -> None:
    """``ab -k`` speaks HTTP/1.0 with ``Connection: keep-alive``: the old server stalled on it."""
    request = b"GET /css/x.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with socket.create_connection(server, timeout=2) as sock:
        for _ in range(3):
            started = time.monotonic()
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"a{}"):
                reply += sock.recv(4096)
            assert reply.startswith(b"HTTP/1.0 200") or reply.startswith(b"HTTP/1.1 200")
            assert b"Content-Length: 3" in reply
            assert time.monotonic() - started < 1.0


def test_slow_clients_do_not_starve_a_normal_one(site: Path, log_lines: list[str]) -> None:
    slow_clients = 200
    with running(site, request_timeout=3.0) as address:
        sockets = []
        try:
            for _ in range(slow_clients):
                sock = socket.create_connection(address, timeout=5)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and never the end of the head
                sockets.append(sock)
            started = time.monotonic()
            response = get(address, "/")
            assert (response.status, body(response)) == (200, b"<h1>home</h1>")
            assert time.monotonic() - started < 1.0, "a normal request waited behind slow ones"
            for sock in sockets[:10]:  # one more header byte now and then does not extend the deadline
                sock.sendall(b"X")
            time.sleep(3.5)
            for sock in sockets[:20]:
                sock.settimeout(2)
                assert sock.recv(100) == b"", "a slow request head was not cut off"
        finally:
            for sock in sockets:
                sock.close()


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path, log_lines: list[str]) -> None:
    (tmp_path / "index.html").write_bytes(b"x")
    (tmp_path / "huge.bin").write_bytes(bytes(64 << 20))  # far more than the socket buffers hold
    with running(tmp_path, send_timeout=1.0) as address:
        with socket.create_connection(address, timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(3)  # read nothing: the server gives up on this client
            [line] = [line for line in log_lines if "/huge.bin" in line]  # the response is over...
            sent = int(line.split('" ')[1].split()[1])
            assert sent < 64 << 20, line  # ... long before the file was sent
            assert float(line.split()[-1]) < 3
        assert get(address, "/").status == 200


def test_connections_beyond_the_cap_are_refused_quickly(site: Path, log_lines: list[str]) -> None:
    with running(site, max_connections=3) as address:
        idle = [socket.create_connection(address, timeout=5) for _ in range(3)]
        try:
            time.sleep(0.2)
            started = time.monotonic()
            try:  # a 503, or a reset when the request was still unread as the server closed
                assert exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 1.5
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert get(address, "/").status == 200


def test_access_log_escapes_what_the_client_controls(server: tuple[str, int], log_lines: list[str]) -> None:
    raw = b'GET /nope%0a%22x HTTP/1.1\r\nHost: x\r\nUser-Agent: evil\xc3\xa9" \\\r\nReferer: a\tb\r\n\r\n'
    reply = exchange(server, raw, wait=1)
    assert reply.startswith(b"HTTP/1.1 404"), reply
    [line] = [line for line in log_lines if "evil" in line]
    assert line.count("\n") == 1 and line.endswith("\n")
    assert all(0x20 <= ord(c) < 0x7F for c in line[:-1]), line
    assert '"GET /nope%0a%22x HTTP/1.1" 404' in line  # the parser refuses raw quotes and controls in targets
    assert '"evil\\xC3\\xA9\\x22 \\x5C"' in line
    assert '"a\\x09b"' in line


def test_requests_with_control_characters_are_refused_and_logged_escaped(
    server: tuple[str, int], log_lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    reply = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x1b[2J\x7fb\r\n\r\n", wait=1)
    assert reply.startswith(b"HTTP/1.1 400") or reply.startswith(b"HTTP/1.0 400"), reply
    assert not [record for record in caplog.records if record.levelno >= 30], "a bad request is not the server's error"
    assert all(all(0x20 <= ord(c) < 0x7F for c in line[:-1]) for line in log_lines)


def test_access_log_line_of_a_request_full_of_control_characters() -> None:
    """Whatever a parser lets through, the line stays one line of printable ASCII."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    request = make_mocked_request("GET", "/x\r\n\x1b[31mfake 200", headers={"User-Agent": "\x00\x07\x7f\u2028", "Referer": "\n"})
    lines: list[str] = []
    logger = static.AccessLog(None, "")  # type: ignore[arg-type]
    logger.emit = lines.append  # type: ignore[method-assign]
    logger.log(request, web.Response(status=404), 0.001)
    [line] = lines
    assert line.count("\n") == 1 and all(0x20 <= ord(c) < 0x7F for c in line[:-1]), line
    assert "\\x0D\\x0A\\x1B[31mfake 200" in line and '"\\x00\\x07\\x7F\\xE2\\x80\\xA8"' in line


def test_escape() -> None:
    assert escape("plain /a?b=c") == "plain /a?b=c"
    assert escape('\r\n\x00"\\é') == "\\x0D\\x0A\\x00\\x22\\x5C\\xC3\\xA9"
    assert escape("bad\udcff") == "bad\\xFF"  # undecodable bytes as the parser kept them
