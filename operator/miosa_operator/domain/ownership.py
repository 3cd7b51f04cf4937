"""Which objects the operator may change: only those it created (PRODUCT.md, "Tenancy").

A namespace editor can create an apps/v1 Deployment or a Service under the very name the
operator would use, and can copy an ownerReference (uids are readable) and any label or
annotation onto it.  So "controlled by our object and labelled like ours" is necessary but not
sufficient: the operator also records the uid the API server gave each object it created
(``status.ownedObjects`` of the Deployment or version), and uids cannot be chosen by clients.

``classify`` is the rule:

* ``ABSENT``: nothing of that name; create it and record its uid.
* ``OURS``: controlled by the owner, labelled with its id, and its uid is the recorded one.
* ``UNVERIFIED``: it claims to be ours (controller reference and id label) but its uid is not
  the recorded one: the operator died between creating it and recording it, or somebody
  forged the claim.  It is deleted (with its uid as precondition) and created again, never
  adopted: an object that names our Deployment as its controller is one Kubernetes' garbage
  collector would delete with it anyway.
* ``FOREIGN``: anything else.  Never adopted, changed or deleted: a ``NameConflict``
  condition and a Warning event say which object is in the way.

``drifted`` decides whether an object of ours still says what the operator rendered: an editor
can patch our objects too, and the rendered-hash annotation alone would not notice (it can be
copied along).  The comparison tolerates what the API server fills in by default and flags
anything else that was added, changed or removed, so e.g. an added ``command`` or
``serviceAccountName`` is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..api.types import Obj


class Ownership(Enum):
    ABSENT = "absent"
    OURS = "ours"
    UNVERIFIED = "unverified"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Owner:
    """The object whose dependents are checked: its uid, and the label that carries its id."""

    kind: str
    name: str
    uid: str
    id_label: str
    id_value: str


def controller_uid(obj: Obj) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return None


def classify(obj: Obj | None, owner: Owner, recorded_uid: str | None) -> Ownership:
    if obj is None:
        return Ownership.ABSENT
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    claims_us = controller_uid(obj) == owner.uid and labels.get(owner.id_label) == owner.id_value
    if not claims_us:
        return Ownership.FOREIGN
    if recorded_uid and metadata.get("uid") == recorded_uid:
        return Ownership.OURS
    return Ownership.UNVERIFIED


def conflict_message(kind: str, obj: Obj, owner: Owner) -> str:
    """What a NameConflict says: which object is in the way, and why it is not ours."""
    metadata = obj.get("metadata") or {}
    controller = controller_uid(obj)
    if controller is None:
        why = "it has no controller"
    elif controller != owner.uid:
        refs = [r for r in metadata.get("ownerReferences") or [] if r.get("controller")]
        why = f"it is controlled by {refs[0].get('kind')} {refs[0].get('name')!r}" if refs else "it has another controller"
    else:
        why = f"it does not carry {owner.id_label}={owner.id_value}"
    return (
        f"{kind} {metadata.get('name')!r} exists and was not created by miosa-operator for {owner.kind} "
        f"{owner.name!r} ({why}); it is left untouched: rename or delete it"
    )


# ---------------------------------------------------------------------------- drift

# Fields the API server fills in on a pod template, a container or a Service: tolerated when
# absent from what we rendered.  Anything else present only on the live object is drift.
DEFAULTED_POD_SPEC = frozenset(
    {"restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy", "schedulerName", "securityContext", "enableServiceLinks"}
)
DEFAULTED_CONTAINER = frozenset({"terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "resources"})


def covers(current: Any, desired: Any) -> bool:
    """``current`` says everything ``desired`` says: dicts by subset, lists item by item."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(covers(current.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(covers(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)


def _extra_keys(current: Mapping[str, Any], desired: Mapping[str, Any], defaulted: frozenset[str]) -> set[str]:
    return {k for k, v in current.items() if k not in desired and k not in defaulted and v not in (None, [], {})}


def pod_spec_drifted(desired: Obj, current: Obj) -> bool:
    """The live pod spec adds, changes or drops something the rendered one says."""
    if not covers(current, desired) or _extra_keys(current, desired, DEFAULTED_POD_SPEC):
        return True
    for key in ("containers", "initContainers"):
        for want, have in zip(desired.get(key) or [], current.get(key) or [], strict=False):
            if _extra_keys(have, want, DEFAULTED_CONTAINER):
                return True
    return False


EXEC_KEYS = frozenset({"image", "command", "args", "env", "envFrom", "volumeMounts", "workingDir", "securityContext"})


def pod_runs(desired: Obj, pod: Obj) -> bool:
    """``pod`` runs the containers of pod spec ``desired``: a ReplicaSet adopts any orphan pod
    that matches its selector, so a pod somebody else made can count as ours unless checked."""
    have = (pod.get("spec") or {}).get("containers") or []
    want = desired.get("containers") or []
    if [c.get("name") for c in have] != [c.get("name") for c in want] or (pod.get("spec") or {}).get("initContainers"):
        return False
    for container, rendered in zip(have, want, strict=True):
        if not covers(container, rendered):
            return False
        if any(container.get(k) not in (None, [], {}) for k in EXEC_KEYS if k not in rendered):
            return False
    return True


def labels_drifted(desired: Obj, current: Obj) -> bool:
    """Our labels (the id label among them) are missing or changed on the object."""
    return not covers((current.get("metadata") or {}).get("labels") or {}, (desired.get("metadata") or {}).get("labels") or {})


def workload_drifted(desired: Obj, current: Obj) -> bool:
    """An apps/v1 Deployment no longer runs what we rendered (template, selector, replicas)."""
    if labels_drifted(desired, current):
        return True
    want, have = desired.get("spec") or {}, current.get("spec") or {}
    if want.get("replicas") != have.get("replicas") or not covers(have.get("selector"), want.get("selector")):
        return True
    want_template, have_template = want.get("template") or {}, have.get("template") or {}
    if not covers(have_template.get("metadata"), want_template.get("metadata")):
        return True
    return pod_spec_drifted(want_template.get("spec") or {}, have_template.get("spec") or {})


def service_drifted(desired: Obj, current: Obj) -> bool:
    """A Service no longer selects our pods on our ports (an edited selector steals traffic)."""
    want, have = desired.get("spec") or {}, current.get("spec") or {}
    return (
        labels_drifted(desired, current)
        or (have.get("selector") or {}) != want.get("selector")
        or not covers(have.get("ports"), want.get("ports"))
        or have.get("type", "ClusterIP") != want.get("type", "ClusterIP")
        or bool(have.get("externalIPs"))
    )


def budget_drifted(desired: Obj, current: Obj) -> bool:
    want, have = desired.get("spec") or {}, current.get("spec") or {}
    return labels_drifted(desired, current) or any(
        have.get(k) != want.get(k) for k in ("minAvailable", "maxUnavailable", "selector")
    )
