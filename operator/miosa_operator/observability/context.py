"""Which object the current handler call is about, for log lines and the journal.

kopf runs each sync handler in a worker thread inside a copy of the event loop's context, so
a ``ContextVar`` set by the handler wrapper is visible to everything that call does (the
controllers, the clients, their log lines) and to nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..api import meta
from ..api.types import Obj


@dataclass
class Reconciling:
    """The object a handler call works on, as it was when the call started."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    id: str | None = None
    """Its own id: ``ver_…`` for a DeploymentVersion, ``dep_…`` for a Deployment."""
    version: str | None = None
    """The DeploymentVersion the line is about: the object itself, or a Deployment's rollout
    target (else its live version)."""
    rollout: Obj | None = field(default=None, repr=False)
    """A Deployment's ``status.rollout`` (updated by the journal when a rollout starts)."""

    @classmethod
    def of(cls, body: Obj) -> Reconciling:
        metadata, status = body.get("metadata") or {}, body.get("status") or {}
        kind = body.get("kind") or ""
        rollout = status.get("rollout") if isinstance(status.get("rollout"), dict) else None
        if kind == meta.VERSION_KIND:
            version = metadata.get("name")
        else:
            version = (rollout or {}).get("version") or status.get("liveVersion")
        return cls(
            kind=kind,
            namespace=metadata.get("namespace") or "",
            name=metadata.get("name") or "",
            uid=metadata.get("uid") or "",
            id=status.get("id"),
            version=version,
            rollout=rollout,
        )


_current: ContextVar[Reconciling | None] = ContextVar("miosa_reconciling", default=None)


def current() -> Reconciling | None:
    return _current.get()


@contextmanager
def reconciling(body: Obj) -> Iterator[Reconciling]:
    """Everything done (and logged) inside is about ``body``."""
    token = _current.set(Reconciling.of(body))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)
