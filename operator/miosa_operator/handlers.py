"""kopf handlers: thin adapters from kopf's causes to the controllers.

Handlers hold no decisions.  They build the controllers once at startup (into kopf's
``memo``), hand them the raw body, and translate the controllers' ``Retry`` and transient
API errors into ``kopf.TemporaryError`` so kopf re-runs them with backoff.  Handlers are
sync functions: kopf runs them in its thread pool, and the Kubernetes and boto3 clients
are blocking anyway.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .api import meta
from .config import OperatorConfig
from .controllers.versions import Retry, VersionController
from .kube.client import ApiError, Conflict, Kube, TransientApiError
from .store.router import StoreRouter

log = logging.getLogger(__name__)


class KopfEvents:
    """Kubernetes events through kopf's event poster (batched, non-blocking)."""

    def normal(self, body: dict[str, Any], reason: str, message: str) -> None:
        kopf.event(body, type="Normal", reason=reason, message=message)

    def warning(self, body: dict[str, Any], reason: str, message: str) -> None:
        kopf.event(body, type="Warning", reason=reason, message=message)


WAITING = "waiting: "


class PlannedWaitsAreInfo(logging.Filter):
    """kopf logs every TemporaryError as an error and posts it as an event; a planned wait
    (a missing Deployment, a running health gate) is neither, so it is lowered to INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and WAITING in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def backoff(retry: int) -> float:
    return float(min(2 ** min(retry, 6), 60))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    logging.getLogger("kopf.objects").addFilter(PlannedWaitsAreInfo())
    settings.execution.max_workers = 16
    settings.posting.level = logging.WARNING  # our own events say what happened
    settings.persistence.finalizer = f"{meta.GROUP}/finalizer"
    settings.watching.server_timeout = 270
    settings.networking.request_timeout = 60
    config = OperatorConfig.from_env()
    kube = Kube.from_environment()
    memo.config = config
    memo.kube = kube
    memo.versions = VersionController(kube, StoreRouter.from_env(), config, KopfEvents())
    log.info("miosa-operator configured: releases at %s", config.releases_uri)


@kopf.on.resume(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
@kopf.on.create(meta.GROUP, meta.VERSION, meta.VERSION_PLURAL)
def version_lifecycle(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """created → building → ready | failed, one idempotent step after another."""
    try:
        memo.versions.reconcile(dict(body))
    except Retry as wait:
        prefix = WAITING if wait.planned else ""
        raise kopf.TemporaryError(f"{prefix}{wait}", delay=wait.delay) from None
    except (TransientApiError, Conflict) as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=backoff(retry)) from exc
    except ApiError as exc:
        # A 4xx we did not expect (e.g. RBAC): keep retrying slowly and say so loudly.
        raise kopf.TemporaryError(f"Kubernetes API refused a request: {exc}", delay=30) from exc
