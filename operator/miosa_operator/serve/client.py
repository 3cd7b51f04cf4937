"""The fetch init container's side of the artifact endpoint (``serve.artifacts``).

A static pod downloads its release from the operator with its projected ServiceAccount token
and no store credentials.  Only the standard library: the init container needs nothing else.

Design decisions:

* **The token file is read for every attempt**: the kubelet rotates projected tokens.
* **Retry what is temporary, stop at what is not.**  Connection failures, 429, 5xx and a
  download cut short (fewer bytes than ``Content-Length``) are ``ReleaseUnavailable``: the
  operator is restarting, busy or the store blinked, and ``fetch_with_retries`` starts over
  (the unpack is atomic, nothing half-done stays behind) until its deadline.  401/403 and
  404 are ``ReleaseUnreadable`` at once: retrying a refused token or a collected release
  only delays the error a person must see.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from .releases import parse_release, release_path

T = TypeVar("T")
DEFAULT_TOKEN_FILE = "/var/run/secrets/miosa/artifacts/token"
DEFAULT_DEADLINE = 300.0


class ReleaseUnavailable(Exception):
    """The endpoint could not deliver the release right now; retrying may help."""


class ReleaseUnreadable(Exception):
    """The endpoint refused (bad token) or has no such release; retrying will not help."""


class EndpointSource:
    """Opens releases at ``base_url`` (e.g. ``http://miosa-operator-artifacts.miosa-system.svc:8081``)."""

    def __init__(self, base_url: str, token_file: str | Path = DEFAULT_TOKEN_FILE, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"artifact endpoint URL must be http(s)://…, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.token_file = Path(token_file)
        self.timeout = timeout

    def open_read(self, release: str) -> _Exact:
        """``release`` is ``<namespace>/<dep id>/<ver id>``; returns a stream of its bytes."""
        parts = parse_release(release.strip("/"))
        if parts is None:
            raise ValueError(f"a release is <namespace>/<dep id>/<ver id>, not {release!r}")
        namespace, deployment_id, version_id = parts
        url = self.base_url + release_path(namespace, deployment_id, version_id)
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ReleaseUnreadable(f"cannot read the pod's token {self.token_file}: {exc.strerror}") from None
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) checked above
        except urllib.error.HTTPError as exc:
            detail = exc.read(512).decode(errors="replace").strip()
            if exc.code == 429 or exc.code >= 500:
                raise ReleaseUnavailable(f"{url}: {exc.code} {detail}") from None
            raise ReleaseUnreadable(f"{url}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ReleaseUnavailable(f"{url}: {reason}") from None
        length = response.headers.get("Content-Length")
        return _Exact(response, int(length) if length and length.isdigit() else None, url)


class _Exact:
    """The response body; ending before ``Content-Length`` is ``ReleaseUnavailable``."""

    def __init__(self, response: IO[bytes], length: int | None, url: str) -> None:
        self._response, self._length, self._url = response, length, url
        self._count = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._response.read(size)
        except (OSError, ValueError) as exc:
            raise ReleaseUnavailable(f"{self._url}: download interrupted after {self._count} bytes: {exc}") from None
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise ReleaseUnavailable(f"{self._url}: download interrupted after {self._count} bytes: {exc!r}") from None
        self._count += len(data)
        if not data and size != 0 and self._length is not None and self._count < self._length:
            raise ReleaseUnavailable(f"{self._url}: download cut short at {self._count} of {self._length} bytes")
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _Exact:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_with_retries(
    attempt: Callable[[], T],
    deadline: float = DEFAULT_DEADLINE,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    report: Callable[[str], None] = lambda message: None,
) -> T:
    """Run ``attempt`` until it succeeds, retrying ``ReleaseUnavailable`` with backoff until ``deadline`` s."""
    end = clock() + deadline
    delay = 0.5
    while True:
        try:
            return attempt()
        except ReleaseUnavailable as exc:
            if clock() + delay > end:
                raise
            report(f"{exc}; retrying in {delay:g} s")
            sleep(delay)
            delay = min(delay * 2, 15.0)
