"""Settings of ``miosa-operator api``, read once from ``MIOSA_API_*`` environment variables.

Kept in one frozen dataclass so that it can move, as one section, into the operator-wide
settings object when that exists.  Every limit that protects other tenants from one
tenant's request is here, with a default that suits a small cluster.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ApiSettings:
    host: str = "127.0.0.1"
    """Address to listen on (the chart sets 0.0.0.0)."""
    port: int = 8090
    uploads_uri: str = "s3://miosa-uploads"
    """Bundles published over HTTP are stored at ``<uploads_uri>/<namespace>/<dep id>/<sha256>.<ext>``:
    the tenant's own upload prefix, which the operator accepts as a source."""
    spool_dir: str = ""
    """Where a bundle is spooled (and hashed) before it is stored; empty: the system's temp dir."""
    max_bundle_bytes: int = 512 * 1024 * 1024
    """Largest bundle a publish accepts (413 above)."""
    max_json_bytes: int = 64 * 1024
    """Largest JSON request body (413 above)."""
    body_idle_timeout: float = 30.0
    """Seconds a request body may stall before the request is answered 408 and dropped."""
    max_uploads: int = 8
    """Bundle uploads in progress at once, all tenants together (429 above)."""
    max_uploads_per_tenant: int = 2
    """Bundle uploads in progress at once per namespace (429 above)."""
    auth_cache_seconds: float = 10.0
    """How long a TokenReview or SubjectAccessReview answer is reused (0: never)."""
    auth_cache_entries: int = 10_000
    page_size: int = 20
    """Versions per page when ``limit`` is not given."""
    max_page_size: int = 100
    max_wait_seconds: float = 300.0
    """Longest ``?wait=true`` (the ``timeout`` parameter is capped here)."""
    kube_timeout: float = 30.0
    """Timeout of each request to the Kubernetes API server."""
    max_connections: int = 200
    """Concurrent connections uvicorn serves before answering 503."""
    shutdown_grace_seconds: float = 25.0
    """On SIGTERM: stop accepting, let requests in flight finish for this long."""

    def spool_directory(self) -> str:
        return self.spool_dir or tempfile.gettempdir()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(f"MIOSA_API_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls, field.name))
            try:
                values[field.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"MIOSA_API_{field.name.upper()}={raw!r}: not a valid {kind.__name__}") from exc
        return cls(**values)  # type: ignore[arg-type]
