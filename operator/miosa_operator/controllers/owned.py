"""Create, update and delete the objects a Deployment or version owns, and only those.

The rule is ``domain.ownership.classify``; this module carries it out against the API:

* absent: create, then record the uid the API server returned in the owner's
  ``status.ownedObjects`` (``Recorder``);
* ours: replace it (PUT, with its resourceVersion) when it drifted from what was rendered, so
  a field an editor added is gone too (a merge patch would keep it);
* unverified: delete exactly that object (uid precondition) and create ours, never adopt;
* foreign: ``NameConflictError``; the caller reports it (a ``NameConflict`` condition and a
  Warning event) and retries later, never touching the object.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from ..api.models import OwnedObject
from ..api.types import Obj
from ..domain.ownership import Owner, Ownership, classify, conflict_message, controller_uid
from ..kube.client import Conflict, KubeApi, NotFound
from .common import Retry

Drifted = Callable[[Obj, Obj], bool]
# Allocated by the API server on a Service; a replace keeps them.
SERVICE_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


class NameConflictError(Exception):
    """An object of the name the operator needs exists and is somebody else's."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.name, self.message = kind, name, message


@dataclass
class Recorder:
    """The owner's ``status.ownedObjects``: what it has, and how to add to it.

    ``write`` patches the owner's status with the full new list (a merge patch replaces
    lists whole); ``entries`` follows every write so one reconcile sees its own records.
    """

    entries: list[OwnedObject]
    write: Callable[[list[Obj]], object]
    legacy: bool = False
    """The owner predates recorded ownership: an object that claims to be its own is adopted
    once (recorded), not replaced.  Only Deployments whose ``ownedObjects`` was never written."""
    written: list[str] = field(default_factory=list)

    def uid(self, kind: str, name: str) -> str | None:
        return next((e.uid for e in self.entries if e.kind == kind and e.name == name), None)

    def record(self, kind: str, name: str, uid: str) -> None:
        entries = [e for e in self.entries if e.kind != kind]
        entries.append(OwnedObject(kind=kind, name=name, uid=uid))  # type: ignore[arg-type]
        self.write([e.wire() for e in entries])
        self.entries = entries
        self.written.append(kind)

    def forget(self, kind: str) -> None:
        if any(e.kind == kind for e in self.entries):
            entries = [e for e in self.entries if e.kind != kind]
            self.write([e.wire() for e in entries])
            self.entries = entries


class OwnedObjects:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube

    def ensure(self, owner: Owner, desired: Obj, recorder: Recorder, drifted: Drifted) -> Obj:
        """The object ``desired`` describes, created or brought back to it; ours only."""
        kind, metadata = desired["kind"], desired["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        current = self.kube.get_object(kind, namespace, name)
        verdict = classify(current, owner, recorder.uid(kind, name))
        if verdict != Ownership.OURS and recorder.legacy and current is not None and controller_uid(current) == owner.uid:
            recorder.record(kind, name, current["metadata"]["uid"])  # created by a release that kept no record
            verdict = Ownership.OURS
        if verdict == Ownership.FOREIGN:
            assert current is not None
            raise NameConflictError(kind, name, conflict_message(kind, current, owner))
        if verdict == Ownership.UNVERIFIED:
            assert current is not None
            self._delete(kind, namespace, name, current["metadata"]["uid"])
            current = None
        if current is None:
            return self._create(kind, namespace, desired, recorder)
        if drifted(desired, current):
            return self._replace(kind, namespace, desired, current)
        return current

    def remove(self, owner: Owner, kind: str, namespace: str, name: str, recorder: Recorder) -> None:
        """Delete the owner's ``kind`` object of that name if it is ours; leave anything else."""
        current = self.kube.get_object(kind, namespace, name)
        if classify(current, owner, recorder.uid(kind, name)) == Ownership.OURS:
            assert current is not None
            self._delete(kind, namespace, name, current["metadata"]["uid"])
        if current is None or recorder.uid(kind, name):
            recorder.forget(kind)

    def _create(self, kind: str, namespace: str, desired: Obj, recorder: Recorder) -> Obj:
        try:
            created = self.kube.create_object(kind, namespace, desired)
        except Conflict as exc:  # somebody created one a moment ago (or it is still being deleted)
            raise Retry(f"{kind} {desired['metadata']['name']} appeared while creating it", delay=1.0, planned=False) from exc
        recorder.record(kind, desired["metadata"]["name"], created["metadata"]["uid"])
        return created

    def _replace(self, kind: str, namespace: str, desired: Obj, current: Obj) -> Obj:
        body = copy.deepcopy(desired)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if kind == "Service":
            for key in SERVICE_ALLOCATED:
                if key in (current.get("spec") or {}):
                    body["spec"][key] = current["spec"][key]
        try:
            return self.kube.replace_object(kind, namespace, desired["metadata"]["name"], body)
        except (Conflict, NotFound) as exc:
            raise Retry(f"{kind} {desired['metadata']['name']} changed while updating it", delay=0.5, planned=False) from exc

    def _delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        try:
            self.kube.delete_object(kind, namespace, name, uid=uid)
        except Conflict as exc:  # replaced by another object meanwhile: look again
            raise Retry(f"{kind} {name} changed while deleting it", delay=0.5, planned=False) from exc
