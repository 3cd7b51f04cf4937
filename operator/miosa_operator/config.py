"""Operator-wide settings, read once from the environment (the Helm chart sets them).

Everything has a default that works on a laptop: with no store configured, releases go to a
local directory (``file://``), the embedded default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .ingest.limits import IngestLimits


def _default_releases_uri() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"file://{base}/miosa-operator/releases"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class OperatorConfig:
    releases_uri: str = field(default_factory=_default_releases_uri)
    """Where canonical releases and build logs go: ``<releases>/<tenant>/<dep id>/<ver id>/``."""
    health_gate_timeout: float = 120.0
    """Seconds a dynamic version's verification workload has to become ready."""
    poll_interval: float = 2.0
    """Seconds between checks while waiting on something in the cluster."""
    limits: IngestLimits = field(default_factory=IngestLimits)
    static_server_image: str = "ghcr.io/miosa/miosa-operator:0.1.0"
    """Image of the static server pods (runs ``miosa-operator fetch`` then serves)."""
    retention_days: int = 30
    """Operator-wide default; a namespace's RetentionPolicy named "default" overrides it."""
    rollback_window: int = 5
    keep_build_logs: bool = True
    gc_interval: float = 3600.0
    """Seconds between retention sweeps; 0 disables the periodic collector."""
    number_order_patience: float = 10.0
    """Seconds a new version lets unnumbered versions created before it take their numbers
    first (numbers then follow creation order); 0 numbers in processing order."""
    source_prefixes: tuple[str, ...] = ()
    """URI prefixes bundles may come from; ``{namespace}`` is the version's namespace.
    Empty allows any readable URI except the releases location itself."""

    def source_allowed(self, uri: str, namespace: str) -> bool:
        """Tenants may not point a version at another tenant's releases (or anything else
        the operator can read but they cannot): releases are never a source, and when
        prefixes are configured the bundle must sit under one of them."""
        if uri.startswith(self.releases_uri.rstrip("/") + "/"):
            return False
        if not self.source_prefixes:
            return True
        return any(uri.startswith(prefix.format(namespace=namespace)) for prefix in self.source_prefixes)

    @classmethod
    def from_env(cls) -> OperatorConfig:
        defaults = cls()
        return cls(
            releases_uri=os.environ.get("MIOSA_RELEASES_URI", "").rstrip("/") or defaults.releases_uri,
            health_gate_timeout=_float("MIOSA_HEALTH_GATE_TIMEOUT", defaults.health_gate_timeout),
            poll_interval=_float("MIOSA_POLL_INTERVAL", defaults.poll_interval),
            limits=IngestLimits.from_env(),
            static_server_image=os.environ.get("MIOSA_STATIC_SERVER_IMAGE", defaults.static_server_image),
            retention_days=int(_float("MIOSA_RETENTION_DAYS", defaults.retention_days)),
            rollback_window=int(_float("MIOSA_ROLLBACK_WINDOW", defaults.rollback_window)),
            keep_build_logs=os.environ.get("MIOSA_KEEP_BUILD_LOGS", "true").lower() not in ("false", "0", "no"),
            gc_interval=_float("MIOSA_GC_INTERVAL", defaults.gc_interval),
            number_order_patience=_float("MIOSA_NUMBER_ORDER_PATIENCE", defaults.number_order_patience),
            source_prefixes=tuple(p.strip() for p in os.environ.get("MIOSA_SOURCE_PREFIXES", "").split(",") if p.strip()),
        )
