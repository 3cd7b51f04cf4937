"""Number claims released in batches (``domain.numbering``: a claim is released once its
version's own status holds the number).

Released one by one, every version costs its Deployment two status writes: the claim and
its release.  On a busy Deployment the release can ride for free on the next claim's
compare-and-swap, which writes ``pendingNumbers`` anyway; so a recorded claim is *due*
here, and dropped either by the next claim this process makes on the same Deployment
(``riding``, then ``released`` once its compare-and-swap succeeded) or, if none comes
within ``delay`` seconds, by a write of its own for every claim due on that Deployment (a
background thread).  ``delay`` 0 releases at once, in the caller's thread, as before.

Nothing depends on the moment of a release: a recorded claim is never consulted again (a
claim is reused only by a version *without* its number, and the seed of a new incarnation
reads the versions themselves).  What a claim left behind costs is room under the schema's
cap of 1,000, so the delay bounds them, a graceful stop releases them all (``stop``), and the
Deployment controller drops those of numbered or deleted versions when it reconciles, which
covers a process that died with claims due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..api import meta
from ..kube.client import ApiError, KubeApi, NotFound

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 5.0

Key = tuple[str, str]  # namespace, Deployment name


@dataclass(frozen=True)
class Riding:
    patch: dict[str, None]
    """The releases to add to the claim's ``pendingNumbers`` patch."""
    gone: frozenset[str]
    """Due claims the claim's read did not show: released by another writer."""

    @property
    def settled(self) -> set[str]:
        """What a successful claim leaves nothing to do for."""
        return {*self.patch, *self.gone}


class ClaimReleases:
    def __init__(self, kube: KubeApi, delay: float) -> None:
        self.kube, self.delay = kube, delay
        self._due: dict[Key, dict[str, float]] = {}  # uid -> when its release is due
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, namespace: str, deployment: str, uid: str) -> None:
        """The claim of ``uid`` is recorded in its version's status: release it."""
        if self.delay <= 0:
            self._write(namespace, deployment, [uid])
            return
        with self._lock:
            self._due.setdefault((namespace, deployment), {}).setdefault(uid, time.monotonic() + self.delay)
            self._start()
            self._lock.notify()

    def holds(self, namespace: str, deployment: str, uid: str) -> bool:
        with self._lock:
            return uid in self._due.get((namespace, deployment), {})

    def riding(self, namespace: str, deployment: str, pending: Mapping[str, int]) -> Riding:
        """What a claim on this Deployment, made on a read that showed ``pending``, carries:
        its due claims still pending there.  Those the read no longer shows were dropped by
        another writer, but only if the read is current, which the claim's compare-and-swap
        proves: so both are forgotten by ``released``, once it succeeded, never before."""
        with self._lock:
            due = set(self._due.get((namespace, deployment), ()))
        carried = {uid for uid in due if uid in pending}
        return Riding({uid: None for uid in carried}, frozenset(due - carried))

    def released(self, namespace: str, deployment: str, uids: Collection[str]) -> None:
        """A write that dropped ``uids`` from ``pendingNumbers`` succeeded."""
        with self._lock:
            due = self._due.get((namespace, deployment))
            if due is None:
                return
            for uid in uids:
                due.pop(uid, None)
            if not due:
                del self._due[(namespace, deployment)]

    def stop(self) -> int:
        """Graceful stop: release every claim still due now; how many were released."""
        with self._lock:
            self._stopped = True
            due, self._due = self._due, {}
            self._lock.notify()
        released = 0
        for (namespace, deployment), uids in due.items():
            try:
                self._write(namespace, deployment, list(uids))
                released += len(uids)
            except ApiError as exc:  # the Deployment controller drops them at its next reconcile
                log.warning("could not release %d number claims on %s/%s: %s", len(uids), namespace, deployment, exc)
        return released

    def __len__(self) -> int:
        with self._lock:
            return sum(len(due) for due in self._due.values())

    # ------------------------------------------------------------------ the background writes
    def _start(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="miosa-claim-releases", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self._ready_now():
                    self._lock.wait(timeout=self._until_next())
                if self._stopped:
                    return
                batches = self._take_ready()
            for (namespace, deployment), uids in batches.items():
                try:
                    self._write(namespace, deployment, uids)
                    self.released(namespace, deployment, uids)
                except Exception as exc:  # noqa: BLE001 - the thread outlives any fault; tried again later
                    log.warning("releasing number claims on %s/%s: %s; trying again", namespace, deployment, exc)
                    self._postpone(namespace, deployment, uids)

    def _ready_now(self) -> bool:
        now = time.monotonic()
        return any(when <= now for due in self._due.values() for when in due.values())

    def _until_next(self) -> float | None:
        whens = [when for due in self._due.values() for when in due.values()]
        return max(0.0, min(whens) - time.monotonic()) if whens else None

    def _take_ready(self) -> dict[Key, list[str]]:
        """Every claim due on a Deployment where at least one is due now: one write each."""
        now = time.monotonic()
        return {key: list(due) for key, due in self._due.items() if any(when <= now for when in due.values())}

    def _postpone(self, namespace: str, deployment: str, uids: list[str]) -> None:
        with self._lock:
            due = self._due.get((namespace, deployment), {})
            for uid in uids:
                if uid in due:
                    due[uid] = time.monotonic() + RETRY_AFTER_ERROR

    def _write(self, namespace: str, deployment: str, uids: Collection[str]) -> None:
        # A merge patch with null removes the key; it needs no precondition.
        released = {uid: None for uid in uids}
        try:
            self.kube.patch_status(meta.DEPLOYMENT_PLURAL, namespace, deployment, {"pendingNumbers": released})
        except NotFound:
            pass  # the Deployment is gone, and its claims with it
