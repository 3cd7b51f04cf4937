"""Kubernetes events posted directly through the API.

kopf's ``kopf.event`` only works inside kopf's own handler context; the retention collector
runs in its own thread and in the one-shot ``miosa-operator gc`` command, so it posts
events itself.  A failure to post is logged, never raised: an event is a courtesy.
"""

from __future__ import annotations

import logging
from typing import Any

from ..api.times import iso, utcnow
from .client import ApiError, EventWriter

log = logging.getLogger(__name__)
COMPONENT = "miosa-operator"


class KubeEvents:
    def __init__(self, kube: EventWriter) -> None:
        self.kube = kube

    def normal(self, body: dict[str, Any], reason: str, message: str) -> None:
        self._post(body, "Normal", reason, message)

    def warning(self, body: dict[str, Any], reason: str, message: str) -> None:
        self._post(body, "Warning", reason, message)

    def _post(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        now = iso(utcnow())
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create_event(meta["namespace"], event)
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)
