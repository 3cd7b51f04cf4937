"""The kopf handlers' error translation (``handlers._run``) and the retry delays.

A controller says "not done" with ``Retry`` (planned: a wait; unplanned: a fault) or lets an
API error through; the handler turns each into the ``kopf.TemporaryError`` kopf retries with,
and counts it.  Nothing here may become a ``PermanentError``: the operator's own faults are
retried, never blamed on a version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf
import pytest

from miosa_operator import handlers
from miosa_operator.controllers.common import Retry
from miosa_operator.controllers.versions import QueuedForSlot
from miosa_operator.kube.client import ApiError, Conflict, NotFound, TransientApiError
from miosa_operator.observability import metrics

BODY = {"apiVersion": "deploy.miosa.io/v1alpha1", "kind": "Deployment", "metadata": {"namespace": "tenant-a", "name": "app"}}


def raising(exc: BaseException) -> Callable[[dict[str, Any]], None]:
    def step(body: dict[str, Any]) -> None:
        raise exc

    return step


def retries(handler: str, reason: str) -> float:
    return float(metrics.HANDLER_RETRIES.labels(handler, reason)._value.get())


def translated(exc: BaseException, retry: int = 0) -> kopf.TemporaryError:
    with pytest.raises(kopf.TemporaryError) as raised:
        handlers._run(raising(exc), BODY, retry, "deployments")
    return raised.value


def test_a_finished_step_is_no_error_and_gets_a_copy_of_the_body() -> None:
    seen: list[dict[str, Any]] = []
    handlers._run(seen.append, BODY, 0, "deployments")
    assert seen == [BODY] and seen[0] is not BODY


@pytest.mark.parametrize(("retry", "delay"), [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 2.0), (40, 2.0)])
def test_a_planned_wait_is_looked_at_again_soon_then_at_its_own_pace(retry: int, delay: float) -> None:
    assert handlers.planned_delay(2.0, retry) == pytest.approx(delay)


def test_a_planned_wait_is_a_temporary_error_marked_as_a_wait() -> None:
    before = retries("deployments", "wait")
    error = translated(Retry("rolling out app-v2", delay=2.0), retry=1)
    assert error.delay == pytest.approx(0.2)
    assert str(error) == f"{handlers.WAITING}rolling out app-v2"
    assert retries("deployments", "wait") == before + 1


def test_an_unplanned_retry_backs_off_at_least_as_long_as_it_asked() -> None:
    before = retries("deployments", "transient")
    assert translated(Retry("store unavailable", delay=0.2, planned=False), retry=3).delay == handlers.backoff(3) == 8
    assert translated(Retry("slow down", delay=20, planned=False), retry=0).delay == 20
    assert not str(translated(Retry("store unavailable", planned=False))).startswith(handlers.WAITING)
    assert retries("deployments", "transient") == before + 3


@pytest.mark.parametrize(
    ("exc", "reason"),
    [(TransientApiError("503 Service Unavailable", 503), "api_unavailable"), (Conflict("409 Conflict", 409), "api_conflict")],
)
def test_transient_api_errors_and_conflicts_back_off(exc: ApiError, reason: str) -> None:
    before = retries("deployments", reason)
    error = translated(exc, retry=2)
    assert error.delay == handlers.backoff(2) and str(error).startswith("Kubernetes API: ")
    assert retries("deployments", reason) == before + 1


@pytest.mark.parametrize("exc", [ApiError("403 Forbidden", 403), NotFound("404 Not Found", 404)])
def test_an_unexpected_refusal_is_retried_slowly_and_loudly(exc: ApiError) -> None:
    before = retries("deployments", "api_refused")
    error = translated(exc, retry=0)
    assert error.delay == 30 and "refused" in str(error)
    assert retries("deployments", "api_refused") == before + 1


def test_a_version_queued_for_a_slot_reaches_the_async_handler_untranslated() -> None:
    with pytest.raises(QueuedForSlot):
        handlers._run(raising(QueuedForSlot("queued", key="tenant-a/v", delay=1.0)), BODY, 0, "versions")


def test_anything_else_propagates_for_kopf_to_report() -> None:
    with pytest.raises(KeyError):
        handlers._run(raising(KeyError("bug")), BODY, 0, "deployments")


@pytest.mark.parametrize("retry", [0, 3, 6, 50])
def test_backoff_doubles_up_to_a_minute(retry: int) -> None:
    assert handlers.backoff(retry) == min(2**retry, 60)


def test_planned_waits_are_logged_as_info_not_errors() -> None:
    def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    wait = record(f"Handler 'deployment_changed' failed temporarily: {handlers.WAITING}rolling out app-v2")
    fault = record("Handler 'deployment_changed' failed temporarily: Kubernetes API: 503")
    assert handlers.PlannedWaitsAreInfo().filter(wait) and wait.levelno == logging.INFO
    assert handlers.PlannedWaitsAreInfo().filter(fault) and fault.levelno == logging.ERROR
