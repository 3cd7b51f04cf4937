"""The unit tests' harness: one operator (a ``VersionController``) and one API server
(``FakeKube``, tests/unit/fakes.py) over a temporary directory, plus bundle builders and the
predicates that pick out the controller's writes for fault injection.

Each test drives ``reconcile`` the way kopf does: read the current object, call it, and on
``Retry`` call it again later (after moving the fake clock where time matters).  Crashes are
simulated by injecting an exception into a specific API call, after which the test simply
reconciles again, as a restarted operator would.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from miosa_operator.api import meta
from miosa_operator.api.models import VersionState
from miosa_operator.controllers.common import Retry
from miosa_operator.controllers.static_build import in_process
from miosa_operator.controllers.versions import VersionController
from miosa_operator.settings import Settings
from miosa_operator.store import FileStore, StoreRouter

from .fakes import FakeClock, FakeKube, RecordingEvents

Obj = dict[str, Any]

NS = "tenant-a"
VERSIONS, DEPLOYMENTS = meta.VERSION_PLURAL, meta.DEPLOYMENT_PLURAL
SITE = {"index.html": b"<!doctype html><h1>hello</h1>\n", "css/site.css": b"body{color:red}\n" * 20, "img/logo.svg": b"<svg/>"}
VER_ID = re.compile(r"^ver_[0-9A-HJKMNP-TV-Z]{26}$")
DEP_ID = re.compile(r"^dep_[0-9A-HJKMNP-TV-Z]{26}$")
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  \S")


class SimulatedCrash(Exception):
    """The operator process dies in the middle of a reconcile."""


# --------------------------------------------------------------------------- bundles


def tar_gz(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            archive.addfile(info, io.BytesIO(data))
        for info in extra or []:
            archive.addfile(info)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def hashed(raw: str) -> str:
    return "h-" + sha256(raw.encode())[:40]


# --------------------------------------------------------------------------- the harness


class Env:
    """One operator (controller) and one API server (FakeKube) over a temp directory."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.tmp = tmp_path
        self.clock = FakeClock()
        self.kube = FakeKube(clock=self.clock)
        self.events = RecordingEvents()
        self.store = StoreRouter(FileStore())
        self.releases = tmp_path / "releases"
        self.uploads = tmp_path / "uploads"
        ingest = config.pop("ingest", in_process)
        self.config = Settings.defaults(
            releases_uri=f"file://{self.releases}",
            uploads_uri=f"file://{self.uploads}",
            health_gate_timeout=config.pop("health_gate_timeout", 60.0),
            poll_interval=0.5,
            number_order_patience=config.pop("number_order_patience", 0.0),
            claim_release_delay=config.pop("claim_release_delay", 0.0),
            **config,
        )
        self.run_id = "run_first"
        self.controller = self.operator(self.run_id, ingest)

    def operator(self, run_id: str, ingest: Any = in_process, store: Any = None, **kwargs: Any) -> VersionController:
        """An operator process: its own run id, in-memory slots and attempt registry; ``store``
        wraps ``self.store`` where a test watches or breaks it."""
        return VersionController(
            self.kube, store or self.store, self.config, self.events, self.clock, ingest=ingest, run_id=run_id, **kwargs
        )

    # ---------------------------------------------------------------- objects
    def upload(self, name: str, data: bytes, namespace: str = NS) -> str:
        """Where the tenant uploads: ``<uploads>/<namespace>/name``."""
        path = self.uploads / namespace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"file://{path}"

    def bundle(self, name: str = "site.tar.gz", files: dict[str, bytes] | None = None) -> tuple[str, str]:
        data = tar_gz(files or SITE)
        return self.upload(name, data), sha256(data)

    def deployment(self, name: str = "site", kind: str = "static") -> Obj:
        return self.kube.create(
            DEPLOYMENTS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": meta.DEPLOYMENT_KIND,
                "metadata": {"name": name, "namespace": NS},
                "spec": {"kind": kind},
            },
        )

    def version(self, name: str, spec: Obj) -> Obj:
        return self.kube.create(
            VERSIONS,
            {
                "apiVersion": meta.API_VERSION,
                "kind": meta.VERSION_KIND,
                "metadata": {"name": name, "namespace": NS},
                "spec": spec,
            },
        )

    def static_version(self, name: str, dep: str, uri: str, digest: str, **extra: Any) -> Obj:
        return self.version(
            name, {"deploymentRef": {"name": dep}, "kind": "static", "artifact": {"uri": uri, "sha256": digest}, **extra}
        )

    def dynamic_version(self, name: str, dep: str, **runtime: Any) -> Obj:
        spec_runtime = {
            "image": "registry.example/api:1.2.3",
            "command": ["/app/server"],
            "port": 8080,
            "healthCheckPath": "/healthz",
            "env": [{"name": "MODE", "value": "prod"}],
            **runtime,
        }
        return self.version(name, {"deploymentRef": {"name": dep}, "kind": "dynamic", "runtime": spec_runtime})

    def get(self, name: str) -> Obj:
        obj = self.kube.peek(VERSIONS, NS, name)
        assert obj is not None, name
        return obj

    def dep(self, name: str = "site") -> Obj:
        obj = self.kube.peek(DEPLOYMENTS, NS, name)
        assert obj is not None, name
        return obj

    # ---------------------------------------------------------------- driving
    def step(self, name: str) -> VersionState | Retry:
        """One handler invocation with the current body; a Retry is returned, not raised."""
        try:
            return self.controller.reconcile(self.get(name))
        except Retry as wait:
            return wait

    def run(self, name: str, max_steps: int = 10) -> Obj:
        """Reconcile until it stops asking for a retry (kopf's retry loop, without the sleeps)."""
        for _ in range(max_steps):
            if not isinstance(self.step(name), Retry):
                return self.get(name)
        raise AssertionError(f"{name} still waiting after {max_steps} reconciles: {self.get(name).get('status')}")

    # ---------------------------------------------------------------- store
    def release_files(self) -> list[str]:
        if not self.releases.exists():
            return []
        return sorted(str(p.relative_to(self.releases)) for p in self.releases.rglob("*") if p.is_file())

    def path(self, uri: str) -> Path:
        assert uri.startswith("file:///"), uri
        return Path(uri.removeprefix("file://"))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def state(obj: Obj) -> str | None:
    return (obj.get("status") or {}).get("state")


def ready_condition(obj: Obj) -> Obj:
    conditions = obj["status"]["conditions"]
    assert conditions[0]["type"] == "Ready", conditions
    return conditions[0]


def states_written(env: Env, name: str) -> list[str]:
    return [s["state"] for s in env.kube.status_writes(VERSIONS, name) if "state" in s]


def claim_write(plural: str, resource_version: str | None = None, **_: Any) -> bool:
    """The compare-and-swap write of the version counter."""
    return plural == DEPLOYMENTS and resource_version is not None


def release_write(plural: str, status: Obj | None = None, resource_version: str | None = None, **_: Any) -> bool:
    """The write that drops a claim from pendingNumbers."""
    pending = (status or {}).get("pendingNumbers") or {}
    return plural == DEPLOYMENTS and resource_version is None and any(v is None for v in pending.values())


def version_status_write(key: str, value: Any = ...) -> Any:
    def when(plural: str, status: Obj | None = None, **_: Any) -> bool:
        if plural != VERSIONS or not status or key not in status:
            return False
        return value is ... or status[key] == value

    return when
