"""The static server's two halves, both run from the operator image by static pods: ``fetch``
(init container: download, verify and unpack the canonical release into an emptyDir) and
``server`` (serve that tree over HTTP, with ``/healthz`` as the readiness probe)."""

from __future__ import annotations

from .fetch import FetchRefused, FetchResult, fetch_release, parse_sha256
from .server import HEALTH_PATH, make_server, serve

__all__ = [
    "HEALTH_PATH",
    "FetchRefused",
    "FetchResult",
    "fetch_release",
    "make_server",
    "parse_sha256",
    "serve",
]
