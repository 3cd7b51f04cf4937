"""In-memory stand-ins for the controllers' collaborators: the ``Kube`` gateway, the event
sink and the clock.

``FakeKube`` is not a mock that records "was called with": it behaves like the API server
for the parts the controllers rely on, so a test can only pass if the controller would work
against the real one:

* objects are JSON dicts stored per (plural, namespace, name) and handed out as deep
  copies; every write bumps ``metadata.resourceVersion`` (a string holding an int);
* ``patch`` / ``patch_status`` are RFC 7386 JSON merge patches (``None`` deletes a key);
  like a CRD with the status subresource, ``patch`` ignores ``status`` and ``patch_status``
  touches nothing but ``status``;
* a ``resource_version`` precondition (or ``metadata.resourceVersion`` inside a patch) that
  does not match raises ``Conflict`` (409);
* the status rules the CRD enforces with CEL (the state moves evaluated from the generated
  CRD's own rule, ``crd_rules.TRANSITIONS``; ``id`` and ``versionNumber`` assigned once,
  ``state`` never removed) and
  the status schema (patterns, bounds, e.g. at most 1000 ``pendingNumbers``) raise
  ``ApiError(status=422)``; so does a change of a DeploymentVersion's immutable spec;
* ``apps/v1`` workloads can be created (``Conflict`` if the name exists), read, patched and
  deleted; ``mark_available`` plays the Deployment controller, ``add_pod`` the scheduler;
* the objects the operator owns (apps/v1 Deployments, Services, PodDisruptionBudgets) also by
  kind (``get_object``…): ``replace_object`` is a PUT with a resourceVersion precondition and
  ``delete_object`` honours a uid precondition, both ``Conflict`` on mismatch;
* the version status rules on retention claims (``collectionClaimedAt`` stays;
  ``promotion`` cannot be set on a claimed version) raise 422 like the CRD's CEL rules.

Failures are injected with ``inject(method, action, when=..., nth=..., times=...)``: before
the matching call is carried out, ``action`` is raised (an exception) or called (a function,
which may also do something else first, e.g. run a concurrent reconcile so that the call's
resourceVersion is really stale).
"""

from __future__ import annotations

import builtins
import copy
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from miosa_operator.api import meta
from miosa_operator.api.models import DeploymentStatus, DeploymentVersionStatus, RetentionPolicyStatus
from miosa_operator.kube.client import ApiError, Conflict, KubeApi, NotFound

from .crd_rules import STATES, TRANSITIONS

Obj = dict[str, Any]
Key = tuple[str, str, str]

WORKLOADS = "apps/v1/deployments"
SERVICES = "v1/services"
BUDGETS = "policy/v1/poddisruptionbudgets"
PODS = "v1/pods"
KINDS = {"Deployment": WORKLOADS, "Service": SERVICES, "PodDisruptionBudget": BUDGETS}

EVENTS = "v1/events"

READS = frozenset({"get", "list", "get_workload", "get_service", "list_pods", "list_events", "get_object"})


# --------------------------------------------------------------------------- clock


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 5, 14, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | float) -> datetime:
        self.now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class RecordedEvent:
    type: str
    reason: str
    message: str
    name: str


class RecordingEvents:
    """``EventSink`` that keeps what was posted."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []

    def normal(self, body: Obj, reason: str, message: str) -> None:
        self._record("Normal", body, reason, message)

    def warning(self, body: Obj, reason: str, message: str) -> None:
        self._record("Warning", body, reason, message)

    def _record(self, type_: str, body: Obj, reason: str, message: str) -> None:
        name = ((body or {}).get("metadata") or {}).get("name", "")
        self.events.append(RecordedEvent(type_, reason, message, name))

    @property
    def recorded(self) -> list[tuple[str, str, str]]:
        return [(e.type, e.reason, e.message) for e in self.events]

    def reasons(self, name: str | None = None) -> list[str]:
        return [e.reason for e in self.events if name is None or e.name == name]

    def of(self, reason: str) -> list[RecordedEvent]:
        return [e for e in self.events if e.reason == reason]


# --------------------------------------------------------------------------- merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------- failure injection


@dataclass
class Injection:
    method: str
    action: BaseException | Callable[..., Any]
    when: Callable[..., bool] | None = None
    nth: int = 1
    """Fire from the nth matching call on..."""
    times: int | None = 1
    """...this many times (None: forever)."""
    seen: int = 0
    fired: int = 0

    def check(self, method: str, call: Obj) -> None:
        if method != self.method or (self.when is not None and not self.when(**call)):
            return
        self.seen += 1
        if self.seen < self.nth or (self.times is not None and self.fired >= self.times):
            return
        self.fired += 1
        if isinstance(self.action, BaseException):
            raise self.action
        self.action(**call)


@dataclass
class Call:
    method: str
    args: Obj
    error: str | None = None


# --------------------------------------------------------------------------- the fake gateway


@dataclass
class FakeKube:
    clock: Callable[[], datetime] = field(default_factory=FakeClock)
    objects: dict[Key, Obj] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    injections: list[Injection] = field(default_factory=list)
    conflicts: int = 0
    _rv: int = 1000
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # ---------------------------------------------------------------- test-side helpers
    def inject(
        self,
        method: str,
        action: BaseException | Callable[..., Any],
        *,
        when: Callable[..., bool] | None = None,
        nth: int = 1,
        times: int | None = 1,
    ) -> Injection:
        """Raise ``action`` (or call it) before the matching call of ``method`` runs.

        ``when`` receives the call's arguments by name (``plural``, ``namespace``, ``name``,
        ``patch``/``status``, ``resource_version``, ``body``...).
        """
        injection = Injection(method, action, when, nth, times)
        self.injections.append(injection)
        return injection

    def create(self, plural: str, body: Obj) -> Obj:
        """What ``kubectl create`` does: server-set metadata, no status."""
        with self._lock:
            obj = copy.deepcopy(body)
            md = obj.setdefault("metadata", {})
            key = (plural, md["namespace"], md["name"])
            if key in self.objects:
                raise Conflict(f"{plural} {md['namespace']}/{md['name']} already exists", status=409)
            if plural == meta.VERSION_PLURAL:
                _check_version_spec(obj.get("spec") or {})
            md.setdefault("uid", str(uuid.uuid4()))
            md.setdefault("generation", 1)
            md.setdefault("creationTimestamp", iso(self.clock()))
            md.setdefault("labels", {})
            md["resourceVersion"] = self._next_rv()
            self.objects[key] = obj
            return copy.deepcopy(obj)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self.objects.pop((plural, namespace, name), None)

    def peek(self, plural: str, namespace: str, name: str) -> Obj | None:
        """The stored object, without recording a call (for assertions)."""
        with self._lock:
            obj = self.objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def mark_available(self, namespace: str, name: str, replicas: int | None = None) -> Obj:
        """What the apps/v1 Deployment controller does once the pods are ready."""
        with self._lock:
            obj = self._must(WORKLOADS, namespace, name)
            wanted = replicas if replicas is not None else (obj.get("spec") or {}).get("replicas", 1)
            obj["status"] = {
                **(obj.get("status") or {}),
                "observedGeneration": obj["metadata"].get("generation", 1),
                "replicas": wanted,
                "updatedReplicas": wanted,
                "readyReplicas": wanted,
                "availableReplicas": wanted,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
            }
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return copy.deepcopy(obj)

    def add_pod(self, namespace: str, pod: Obj) -> None:
        with self._lock:
            obj = copy.deepcopy(pod)
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            self.objects[(PODS, namespace, obj["metadata"]["name"])] = obj

    @property
    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method not in READS]

    def calls_to(self, method: str, plural: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (plural is None or c.args.get("plural") == plural)]

    def status_writes(self, plural: str, name: str, accepted_only: bool = True) -> list[Obj]:
        """The status patches sent for one object, in order (by default only those applied)."""
        return [
            c.args["status"]
            for c in self.calls
            if c.method == "patch_status"
            and c.args["plural"] == plural
            and c.args["name"] == name
            and (c.error is None or not accepted_only)
        ]

    # ---------------------------------------------------------------- custom objects (Kube API)
    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self._call("get", plural=plural, namespace=namespace, name=name):
            obj = self.objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str = "", field_selector: str = ""
    ) -> builtins.list[Obj]:
        with self._call("list", plural=plural, namespace=namespace, label_selector=label_selector):
            match = _selector(label_selector)
            fields = _field_selector(field_selector)
            return [
                copy.deepcopy(obj)
                for (p, ns, _), obj in sorted(self.objects.items())
                if p == plural and (namespace is None or ns == namespace) and match(obj) and fields(obj)
            ]

    def patch(self, plural: str, namespace: str, name: str, patch: Obj, resource_version: str | None = None) -> Obj:
        with self._call("patch", plural=plural, namespace=namespace, name=name, patch=patch, resource_version=resource_version):
            obj = self._must(plural, namespace, name)
            self._precondition(obj, resource_version or (patch.get("metadata") or {}).get("resourceVersion"))
            body = {k: v for k, v in patch.items() if k != "status"}  # status needs the subresource
            if isinstance(body.get("metadata"), dict):
                body["metadata"] = {
                    k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "uid", "creationTimestamp")
                }
            new = merge_patch(obj, body)
            if new.get("spec") != obj.get("spec"):
                if plural == meta.VERSION_PLURAL:
                    raise ApiError(
                        "DeploymentVersion.deploy.miosa.io is invalid: spec: Invalid value: spec is immutable",
                        status=422,
                    )
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            return self._store(plural, namespace, name, new)

    def patch_status(self, plural: str, namespace: str, name: str, status: Obj, resource_version: str | None = None) -> Obj:
        with self._call(
            "patch_status", plural=plural, namespace=namespace, name=name, status=status, resource_version=resource_version
        ):
            obj = self._must(plural, namespace, name)
            self._precondition(obj, resource_version)
            old_status = obj.get("status") or {}
            new_status = merge_patch(old_status, status)
            _validate_status(plural, old_status, new_status)
            new = copy.deepcopy(obj)
            new["status"] = new_status
            return self._store(plural, namespace, name, new)

    # ---------------------------------------------------------------- apps/v1 and core/v1 (Kube API)
    def get_workload(self, namespace: str, name: str) -> Obj | None:
        with self._call("get_workload", namespace=namespace, name=name):
            obj = self.objects.get((WORKLOADS, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def create_workload(self, namespace: str, body: Obj) -> Obj:
        with self._call("create_workload", namespace=namespace, body=body):
            return self._create_builtin(WORKLOADS, namespace, body)

    def patch_workload(self, namespace: str, name: str, patch: Obj) -> Obj:
        with self._call("patch_workload", namespace=namespace, name=name, patch=patch):
            obj = self._must(WORKLOADS, namespace, name)
            new = merge_patch(obj, {k: v for k, v in patch.items() if k != "status"})
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            return self._store(WORKLOADS, namespace, name, new)

    def delete_workload(self, namespace: str, name: str) -> bool:
        with self._call("delete_workload", namespace=namespace, name=name):
            return self.objects.pop((WORKLOADS, namespace, name), None) is not None

    def get_service(self, namespace: str, name: str) -> Obj | None:
        with self._call("get_service", namespace=namespace, name=name):
            obj = self.objects.get((SERVICES, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def create_service(self, namespace: str, body: Obj) -> Obj:
        with self._call("create_service", namespace=namespace, body=body):
            return self._create_builtin(SERVICES, namespace, body)

    def patch_service(self, namespace: str, name: str, patch: Obj) -> Obj:
        with self._call("patch_service", namespace=namespace, name=name, patch=patch):
            obj = self._must(SERVICES, namespace, name)
            return self._store(SERVICES, namespace, name, merge_patch(obj, patch))

    def get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        with self._call("get_object", kind=kind, namespace=namespace, name=name):
            obj = self.objects.get((KINDS[kind], namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def create_object(self, kind: str, namespace: str, body: Obj) -> Obj:
        with self._call("create_object", kind=kind, namespace=namespace, body=body):
            return self._create_builtin(KINDS[kind], namespace, body)

    def replace_object(self, kind: str, namespace: str, name: str, body: Obj) -> Obj:
        with self._call("replace_object", kind=kind, namespace=namespace, name=name, body=body):
            obj = self._must(KINDS[kind], namespace, name)
            self._precondition(obj, (body.get("metadata") or {}).get("resourceVersion"))
            new = copy.deepcopy(body)
            for key in ("uid", "creationTimestamp", "generation"):
                new["metadata"][key] = obj["metadata"].get(key)
            new["metadata"]["namespace"] = namespace
            new["status"] = obj.get("status") or {}
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            return self._store(KINDS[kind], namespace, name, new)

    def patch_object(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        with self._call("patch_object", kind=kind, namespace=namespace, name=name, patch=patch):
            obj = self._must(KINDS[kind], namespace, name)
            new = merge_patch(obj, {k: v for k, v in patch.items() if k != "status"})
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            return self._store(KINDS[kind], namespace, name, new)

    def delete_object(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        with self._call("delete_object", kind=kind, namespace=namespace, name=name, uid=uid):
            obj = self.objects.get((KINDS[kind], namespace, name))
            if obj is None:
                return False
            if uid is not None and obj["metadata"].get("uid") != uid:
                raise Conflict(
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: {obj['metadata'].get('uid')}",
                    status=409,
                )
            del self.objects[(KINDS[kind], namespace, name)]
            return True

    def list_pods(self, namespace: str, label_selector: str) -> builtins.list[Obj]:
        with self._call("list_pods", namespace=namespace, label_selector=label_selector):
            match = _selector(label_selector)
            return [
                copy.deepcopy(obj)
                for (p, ns, _), obj in sorted(self.objects.items())
                if p == PODS and ns == namespace and match(obj)
            ]

    def list_events(self, namespace: str, field_selector: str, limit: int = 100) -> builtins.list[Obj]:
        """Events added with ``add_event``, filtered by ``involvedObject.name=…``."""
        with self._call("list_events", namespace=namespace, field_selector=field_selector):
            wanted = dict(term.split("=", 1) for term in field_selector.split(",") if term)
            return [
                copy.deepcopy(obj)
                for (p, ns, _), obj in sorted(self.objects.items())
                if p == EVENTS
                and ns == namespace
                and all((obj.get("involvedObject") or {}).get(k.removeprefix("involvedObject.")) == v for k, v in wanted.items())
            ][:limit]

    def add_event(self, namespace: str, event: Obj) -> None:
        with self._lock:
            obj = copy.deepcopy(event)
            obj.setdefault("metadata", {}).setdefault("name", f"event-{self._next_rv()}")
            self.objects[(EVENTS, namespace, obj["metadata"]["name"])] = obj

    # ---------------------------------------------------------------- plumbing
    def _call(self, method: str, **args: Any) -> _CallContext:
        return _CallContext(self, method, args)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _must(self, plural: str, namespace: str, name: str) -> Obj:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise NotFound(f"{plural} {namespace}/{name} not found", status=404)
        return obj

    def _precondition(self, obj: Obj, resource_version: str | None) -> None:
        if resource_version is not None and resource_version != obj["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict(
                f"Operation cannot be fulfilled: the object has been modified "
                f"(have {obj['metadata']['resourceVersion']}, precondition {resource_version})",
                status=409,
            )

    def _store(self, plural: str, namespace: str, name: str, new: Obj) -> Obj:
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[(plural, namespace, name)] = new
        return copy.deepcopy(new)

    def _create_builtin(self, kind: str, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        md["namespace"] = namespace
        key = (kind, namespace, md["name"])
        if key in self.objects:
            raise Conflict(f"{kind} {namespace}/{md['name']} already exists", status=409)
        md["uid"] = str(uuid.uuid4())
        md["generation"] = 1
        md["creationTimestamp"] = iso(self.clock())
        md["resourceVersion"] = self._next_rv()
        obj.setdefault("status", {})
        self.objects[key] = obj
        return copy.deepcopy(obj)


class _CallContext:
    """Records the call, runs injections, serialises it like one API request."""

    def __init__(self, kube: FakeKube, method: str, args: Obj) -> None:
        self.kube, self.call = kube, Call(method, copy.deepcopy(args))

    def __enter__(self) -> None:
        self.kube.calls.append(self.call)
        try:
            for injection in list(self.kube.injections):
                injection.check(self.call.method, copy.deepcopy(self.call.args))
        except BaseException as exc:
            self.call.error = type(exc).__name__
            raise
        self.kube._lock.acquire()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.kube._lock.release()
        if exc_type is not None:
            self.call.error = exc_type.__name__


# --------------------------------------------------------------------------- what the CRD enforces


def _invalid(message: str) -> ApiError:
    return ApiError(f"is invalid: {message}", status=422)


def _check_version_spec(spec: Obj) -> None:
    """The kind-specific CEL rules of DeploymentVersion.spec."""
    kind = spec.get("kind")
    if kind not in ("static", "dynamic"):
        raise _invalid(f"spec.kind: Unsupported value: {kind!r}")
    if kind == "dynamic" and "runtime" not in spec:
        raise _invalid("spec.runtime is required when spec.kind is dynamic")
    if kind == "static" and "runtime" in spec:
        raise _invalid("spec.runtime is forbidden when spec.kind is static")
    if kind == "static" and "artifact" not in spec:
        raise _invalid("spec.artifact is required when spec.kind is static")


def _validate_status(plural: str, old: Obj, new: Obj) -> None:
    models: dict[str, type[BaseModel]] = {
        meta.VERSION_PLURAL: DeploymentVersionStatus,
        meta.DEPLOYMENT_PLURAL: DeploymentStatus,
        meta.RETENTION_PLURAL: RetentionPolicyStatus,
    }
    model = models.get(plural)
    if model is not None:
        try:
            model.model_validate(new)
        except ValidationError as exc:
            raise _invalid(f"status: {exc}") from None
    if plural != meta.VERSION_PLURAL:
        return
    for field_name in ("id", "versionNumber"):
        if field_name in old and new.get(field_name) != old[field_name]:
            raise _invalid(f"status.{field_name} is assigned once")
    if "state" in old and "state" not in new:
        raise _invalid("status.state cannot be removed")
    if "collectionClaimedAt" in old and "collectionClaimedAt" not in new:
        raise _invalid("status.collectionClaimedAt cannot be removed: a claimed version is collected")
    if "collectionClaimedAt" in new and "promotion" in new and new.get("promotion") != old.get("promotion"):
        raise _invalid("status.promotion cannot be set on a version claimed for collection")
    if "state" in new and new["state"] in STATES:  # (anything else: the schema's enum refused it above)
        before, after = old.get("state"), new["state"]
        if not TRANSITIONS[(before, after)]:
            raise _invalid(
                f"status.state cannot move to {after} from its current state "
                "(allowed: first created, then created->building, building->ready|failed, "
                "ready->archived, archived->ready)"
            )


def _selector(selector: str) -> Callable[[Obj], bool]:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``."""
    terms = [t.strip() for t in selector.split(",") if t.strip()]

    def match(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for term in terms:
            if "!=" in term:
                key, value = term.split("!=", 1)
                if labels.get(key.strip()) == value.strip():
                    return False
            elif "=" in term:
                key, value = term.replace("==", "=").split("=", 1)
                if labels.get(key.strip()) != value.strip():
                    return False
            elif term.startswith("!"):
                if term[1:] in labels:
                    return False
            elif term not in labels:
                return False
        return True

    return match


def _field_selector(selector: str) -> Any:
    """Equality field selectors (``a.b=c,d=e``), as the CRD's selectableFields allow."""
    wanted = [term.split("=", 1) for term in selector.split(",") if term]

    def value(obj: Obj, path: str) -> Any:
        found: Any = obj
        for part in path.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        return found

    return lambda obj: all(str(value(obj, path) or "") == expected for path, expected in wanted)


def _satisfies_kube_api(fake: FakeKube) -> KubeApi:
    """mypy (``make lint``) checks here that the fake offers every call the controllers make."""
    return fake
