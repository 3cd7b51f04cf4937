"""Wrappers that time and count the operator's steps without living inside them.

Each wrapper has the interface of what it wraps (unknown attributes pass through), so the
handlers build the controllers as before and wrap one collaborator:

* ``TimedStaticBuild`` around ``VersionController.static_build``: one ``run`` is one
  ingestion (stream, verify, store); a decided run is counted with its outcome and the
  condition reason, timed, and its release size observed.  A run that raised ``Retry``
  decided nothing (it is counted as a handler retry instead).
* ``CountedSweeps`` around the collector: runs by outcome and the time of the last success.
* ``FreedBytes`` around the collector's store: the size of each object it deletes.
* ``admission_decisions``: the answers of an admission handler.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from ..api.conditions import Reason
from ..store.base import StoreError
from . import metrics

log = logging.getLogger(__name__)


class _Wrapper:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TimedStaticBuild(_Wrapper):
    def run(self, version: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        outcome = self._inner.run(version, *args, **kwargs)
        seconds = time.monotonic() - started
        failure = getattr(outcome, "failure", None)
        if failure is not None:
            metrics.ingestion("failed", str(failure.reason), seconds)
        else:
            manifest = (getattr(outcome, "fields", None) or {}).get("artifactManifest") or {}
            metrics.ingestion("ready", Reason.READY.value, seconds, manifest.get("totalBytes"))
        return outcome


class CountedSweeps(_Wrapper):
    def sweep(self, *, dry_run: bool = False, **kwargs: Any) -> Any:
        if dry_run:
            return self._inner.sweep(dry_run=True, **kwargs)
        try:
            report = self._inner.sweep(dry_run=False, **kwargs)
        except Exception:
            metrics.collector_run(False, time.time())
            raise
        metrics.collector_run(True, time.time())
        return report


class FreedBytes(_Wrapper):
    """Counts the bytes of what the collector deletes (one HEAD before each delete)."""

    def delete(self, uri: str) -> bool:
        try:
            info = self._inner.head(uri)
        except StoreError:
            info = None  # the delete below reports real store trouble
        deleted = self._inner.delete(uri)
        if deleted and info is not None:
            metrics.collected(freed_bytes=info.size)
        return bool(deleted)


def admission_decisions(webhook: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` (a kopf admission handler, sync or async), counting allowed, denied and unavailable."""
    import kopf

    def count(error: BaseException | None) -> None:
        if error is None:
            metrics.webhook_decision(webhook, "allowed")
        elif isinstance(error, kopf.AdmissionError) and (error.code or 0) < 500:
            metrics.webhook_decision(webhook, "denied")
        else:
            metrics.webhook_decision(webhook, "unavailable")

    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def counted_async(**kwargs: Any) -> Any:
            try:
                result = await handler(**kwargs)
            except Exception as error:
                count(error)
                raise
            count(None)
            return result

        return counted_async

    @functools.wraps(handler)
    def counted(**kwargs: Any) -> Any:
        try:
            result = handler(**kwargs)
        except Exception as error:
            count(error)
            raise
        count(None)
        return result

    return counted
