"""What every controller shares: the retry signal, the event sink, failures and time.

Controllers are framework-free; ``Retry`` is how they tell the kopf handler "not done,
call me again", and ``EventSink`` is how they post Kubernetes events without importing kopf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..api.conditions import Reason

# Time and JSON as every controller uses them (defined once, in api/).
from ..api.times import iso as iso
from ..api.times import parse_time as parse_time
from ..api.times import utcnow as utcnow
from ..api.types import Clock as Clock
from ..api.types import Obj as Obj


class Retry(Exception):
    """Not done yet: call ``reconcile`` again after ``delay`` seconds.

    ``planned`` marks an expected wait (a Deployment that does not exist yet, a health gate
    in progress) as opposed to a transient failure worth a warning.
    """

    def __init__(self, message: str, delay: float = 2.0, planned: bool = True) -> None:
        super().__init__(message)
        self.delay = delay
        self.planned = planned


class EventSink(Protocol):
    def normal(self, body: Obj, reason: str, message: str) -> None: ...
    def warning(self, body: Obj, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Failure:
    """A decision that the version cannot become ready: the Ready condition's reason."""

    reason: Reason
    message: str


def object_ref(obj: Any) -> Obj:
    """What an event needs to point at its object."""
    return {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "metadata": {"name": obj.metadata.name, "namespace": obj.metadata.namespace, "uid": obj.metadata.uid},
    }
