"""The plugin's commands: each reads its arguments, talks to the cluster, prints, returns 0.

Failures are raised as ``PluginError`` (``cli`` prints them and exits with their code), so
every command reads top to bottom as the happy path.

Decisions:

* ``promote`` and ``rollback`` are one JSON merge patch of the Deployment, exactly what
  ``kubectl patch`` would send, so GitOps users see the same field change either way.  The
  patch always sets the ``change-cause`` annotation, removing it when no ``--reason`` is
  given: the operator records that annotation in history, and a reason left over from the
  previous promotion would otherwise be recorded again.
* Promotability is judged only by the admission webhook; the plugin relays its message.
  The one pre-check is existence of the version (a GET), so an unknown name exits 3 like
  everywhere else instead of a webhook 422.
* ``rollback`` under ``promotionPolicy: Auto`` also switches the policy to ``Manual`` in the
  same patch: under Auto the operator keeps the newest ready version live, which would
  undo the rollback at once.
* ``retry`` never touches ``spec`` (GitOps owns it): it sets the annotation
  ``deploy.miosa.io/retry: <version>@<time>``, which the operator acts on once
  (``status.lastRetryToken``), releasing the version from ``status.revertedVersions``.
* ``status`` reads the kstatus conditions: Ready (exit 0), Stalled (exit 1: failed,
  reverted, refused), anything else in progress (exit 6); ``--watch`` follows the
  Deployment with a watch until it is one or the other, or ``--timeout`` runs out.
* ``-o json|yaml|name|jsonpath=…`` on every command: lists and shows print the seed's
  Version shape, the Deployment commands the Deployment object, ``logs`` the log's URIs
  and text.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..api import meta
from ..api.conditions import ConditionType
from ..api.types import Obj
from . import output
from .client import Cluster
from .errors import ExitCode, PluginError
from .selection import (
    AttributionFilter,
    belongs,
    newest_first,
    previous_live,
    state_selector,
    version_selector,
)

POLL_INTERVAL = 1.0
MANUAL, AUTO = "Manual", "Auto"


def emit(args: argparse.Namespace, data: Any, names: Sequence[str]) -> None:
    """Print ``data`` in the machine format of ``-o`` (jsonpath prints no newline, like kubectl)."""
    text = output.formatted(data, args.output, names)
    print(text, end="" if args.output.kind == "jsonpath" else "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- versions


def versions_list(cluster: Cluster, args: argparse.Namespace) -> int:
    attribution = AttributionFilter(args.workspace, args.user, args.project)
    items = cluster.list_versions(version_selector(args.deployment, attribution), state_selector(args.state))
    versions = [output.seed_version(v) for v in newest_first(v for v in items if belongs(v, args.deployment, attribution))]
    # The Deployment is read only when needed: for the live marker, or to tell an unknown
    # Deployment (exit 3) from one without matching versions (an empty list).
    live = None
    if args.output.human or not versions:
        live = _live_version(cluster, args.deployment, must_exist=not versions)
    if not args.output.human:
        emit(args, versions, [output.resource_name(meta.VERSION_KIND, v["name"]) for v in versions])
    elif versions:
        print(output.versions_table(versions, live, _now()))
    else:
        print(f'No versions of deployment "{args.deployment}" match in namespace "{cluster.namespace}".', file=sys.stderr)
    return 0


def versions_show(cluster: Cluster, args: argparse.Namespace) -> int:
    body = cluster.get_version(args.version)
    version = output.seed_version(body)
    if not args.output.human:
        emit(args, version, [output.resource_name(meta.VERSION_KIND, args.version)])
        return 0
    deployment = ((body.get("spec") or {}).get("deploymentRef") or {}).get("name", "")
    live = _live_version(cluster, deployment, must_exist=False) if deployment else None
    print(output.version_details(version, live=live == args.version))
    return 0


def _live_version(cluster: Cluster, deployment: str, must_exist: bool) -> str | None:
    try:
        body = cluster.get_deployment(deployment)
    except PluginError as error:
        if error.code == ExitCode.NOT_FOUND and not must_exist:
            return None  # versions may exist before their Deployment does
        raise
    return (body.get("status") or {}).get("liveVersion")


# ---------------------------------------------------------------------------- history


def history(cluster: Cluster, args: argparse.Namespace) -> int:
    status = cluster.get_deployment(args.deployment).get("status") or {}
    entries = output.history_entries(status)
    if not args.output.human:
        emit(args, entries, [output.resource_name(meta.VERSION_KIND, e["version"]) for e in entries])
    elif entries:
        print(output.history_table(entries))
    else:
        print(f'deployment "{args.deployment}" has no promotion history yet', file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- promote / rollback


def promotion_patch(version: str, reason: str | None, switch_to_manual: bool = False) -> Obj:
    spec: Obj = {"promotedVersion": version}
    if switch_to_manual:
        spec["promotionPolicy"] = MANUAL
    return {"metadata": {"annotations": {meta.ANNOTATION_CHANGE_CAUSE: reason or None}}, "spec": spec}


def promote(cluster: Cluster, args: argparse.Namespace) -> int:
    cluster.get_version(args.version)  # unknown name: exit 3, not a webhook 422
    patched = cluster.patch_deployment(args.deployment, promotion_patch(args.version, args.reason))
    if (patched.get("spec") or {}).get("promotionPolicy") == AUTO:
        print(
            f'note: deployment "{args.deployment}" has promotionPolicy Auto: the newest ready version stays live '
            f"and spec.promotedVersion is ignored; use `rollback --to {args.version}` to pin it (switches to Manual)",
            file=sys.stderr,
        )
    return _finish(cluster, args, patched, f"promotion of {args.version}")


def rollback(cluster: Cluster, args: argparse.Namespace) -> int:
    deployment = cluster.get_deployment(args.deployment)
    target = args.to or _previous_live(cluster, args.deployment, deployment)
    if args.to:
        cluster.get_version(args.to)
    auto = (deployment.get("spec") or {}).get("promotionPolicy") == AUTO
    if auto:
        print(
            f'note: switching deployment "{args.deployment}" from promotionPolicy Auto to Manual: '
            "Auto would immediately re-promote the newest ready version",
            file=sys.stderr,
        )
    patched = cluster.patch_deployment(args.deployment, promotion_patch(target, args.reason, switch_to_manual=auto))
    return _finish(cluster, args, patched, f"rollback of {args.deployment} to {target}", target)


def _previous_live(cluster: Cluster, name: str, deployment: Obj) -> str:
    status = deployment.get("status") or {}
    items = cluster.list_versions(version_selector(name))
    versions = {v["metadata"]["name"]: v for v in items if belongs(v, name)}
    target = previous_live(status.get("history") or [], status.get("liveVersion"), versions)
    if target is None:
        raise PluginError(f'no previous live version to roll back to (deployment "{name}")', ExitCode.REFUSED)
    return target


def _finish(cluster: Cluster, args: argparse.Namespace, patched: Obj, what: str, version: str | None = None) -> int:
    version = version or args.version
    body = patched
    if args.wait:
        generation = int((patched.get("metadata") or {}).get("generation") or 0)
        body = wait_for(lambda: cluster.get_deployment(args.deployment), lambda b: rollout_outcome(b, version, generation),
                        version, args.timeout)  # fmt: skip
    if not args.output.human:
        emit(args, body, [output.resource_name(body)])
    elif args.wait:
        print(completed_message(body, version))
    else:
        print(f"{what} requested")
    return 0


# ---------------------------------------------------------------------------- retry


def retry_token(version: str, now: datetime) -> str:
    return f"{version}@{now.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def retry(cluster: Cluster, args: argparse.Namespace) -> int:
    version = cluster.get_version(args.version)
    name = ((version.get("spec") or {}).get("deploymentRef") or {}).get("name", "")
    deployment = cluster.get_deployment(name)
    status = deployment.get("status") or {}
    if args.version not in (status.get("revertedVersions") or []):
        stalled = _condition(status, ConditionType.STALLED)
        if stalled.get("status") == "True":
            raise PluginError(
                f"{args.version} has no reverted rollout to retry: deployment {name} is Stalled "
                f"({stalled.get('reason')}: {stalled.get('message')})",
                ExitCode.REFUSED,
            )
        live = status.get("liveVersion") or "nothing"
        raise PluginError(
            f"{args.version} has no reverted rollout to retry on deployment {name} ({live} is live)", ExitCode.REFUSED
        )
    token = retry_token(args.version, _now())
    patch = {"metadata": {"annotations": {meta.ANNOTATION_RETRY: token, meta.ANNOTATION_CHANGE_CAUSE: args.reason or None}}}
    body = cluster.patch_deployment(name, patch)
    if args.wait:
        body = wait_for(lambda: cluster.get_deployment(name), lambda b: retry_outcome(b, args.version, token),
                        args.version, args.timeout)  # fmt: skip
    if not args.output.human:
        emit(args, body, [output.resource_name(body)])
    elif args.wait:
        print(completed_message(body, args.version))
    else:
        print(f"retry of {args.version} on deployment {name} requested")
    return 0


# ---------------------------------------------------------------------------- waiting


@dataclass(frozen=True)
class Outcome:
    done: bool
    message: str = ""


def _condition(status: Obj, type_: str) -> Obj:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def rollout_outcome(body: Obj, version: str, generation: int) -> Outcome | None:
    """Done, failed (with the operator's reason), or None to keep waiting."""
    status = body.get("status") or {}
    if status.get("liveVersion") == version and not status.get("rollout"):
        return Outcome(True)
    if status.get("rollout") or int(status.get("observedGeneration") or 0) < generation:
        return None  # rolling out, or the operator has not looked at our change yet
    # Stalled (kstatus "Failed"): reverted, failed or unpromotable; WaitingForVersion keeps waiting.
    stalled = _condition(status, ConditionType.STALLED)
    if stalled.get("status") == "True" and int(stalled.get("observedGeneration") or 0) >= generation:
        return Outcome(False, f"{stalled.get('reason')}: {stalled.get('message') or 'the operator cannot make it live'}")
    return None


def retry_outcome(body: Obj, version: str, token: str) -> Outcome | None:
    status = body.get("status") or {}
    if status.get("lastRetryToken") != token or status.get("rollout"):
        return None  # not acted on yet, or rolling out
    if status.get("liveVersion") == version:
        return Outcome(True)
    if version in (status.get("revertedVersions") or []):
        stalled = _condition(status, ConditionType.STALLED)
        return Outcome(False, f"{stalled.get('reason')}: {stalled.get('message') or 'the rollout failed again'}")
    return None


def wait_for(
    fetch: Callable[[], Obj],
    outcome_of: Callable[[Obj], Outcome | None],
    version: str,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Obj:
    deadline = clock() + timeout
    while True:
        body = fetch()
        outcome = outcome_of(body)
        if outcome is not None and outcome.done:
            return body
        if outcome is not None:
            raise PluginError(f"{version} did not go live: {outcome.message}", ExitCode.REFUSED)
        if clock() >= deadline:
            ready = _condition(body.get("status") or {}, ConditionType.READY).get("message") or "no Ready condition yet"
            raise PluginError(f"timed out after {timeout:g}s waiting for {version} to go live ({ready})", ExitCode.IN_PROGRESS)
        sleep(POLL_INTERVAL)


def wait_for_rollout(
    fetch: Callable[[], Obj],
    version: str,
    generation: int,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Obj:
    return wait_for(fetch, lambda b: rollout_outcome(b, version, generation), version, timeout, sleep, clock)


def completed_message(body: Obj, version: str) -> str:
    status = body.get("status") or {}
    last = (status.get("history") or [{}])[-1]
    name = body.get("metadata", {}).get("name", "")
    number = status.get("liveVersionNumber")
    line = f"{version} (#{number}) is live on deployment {name}" if number else f"{version} is live on deployment {name}"
    if last.get("version") == version:
        line += f" ({last.get('action')}" + (f" by {last['actor']}" if last.get("actor") else "") + ")"
    return line


# ---------------------------------------------------------------------------- status


HEALTHY, PROGRESSING, DEGRADED = "Healthy", "Progressing", "Degraded"
EXIT_OF = {HEALTHY: ExitCode.OK, DEGRADED: ExitCode.REFUSED, PROGRESSING: ExitCode.IN_PROGRESS}


@dataclass(frozen=True)
class Assessment:
    """A Deployment as kstatus reads it: Healthy (Ready), Degraded (Stalled) or Progressing."""

    phase: str
    reason: str
    message: str
    live: str | None
    rollout: str | None

    def line(self) -> tuple[str, ...]:
        return (self.phase, self.reason, self.message, self.live or "", self.rollout or "")


def assess(body: Obj) -> Assessment:
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    generation = int(metadata.get("generation") or 0)
    rollout = status.get("rollout") or {}
    rolling = f"{rollout.get('action')} {rollout.get('version')} (#{rollout.get('versionNumber')})" if rollout else None
    live = status.get("liveVersion")
    live_text = f"{live} (#{status.get('liveVersionNumber')})" if live else None
    ready, stalled = _condition(status, ConditionType.READY), _condition(status, ConditionType.STALLED)

    def at(phase: str, reason: str, message: str) -> Assessment:
        return Assessment(phase, reason, message, live_text, rolling)

    retry = (metadata.get("annotations") or {}).get(meta.ANNOTATION_RETRY)
    if retry and retry != status.get("lastRetryToken"):
        return at(PROGRESSING, "RetryRequested", f"the operator has not acted on retry {retry} yet")
    if int(status.get("observedGeneration") or 0) < generation or int(ready.get("observedGeneration") or 0) < generation:
        return at(PROGRESSING, "NotObserved", f"the operator has not acted on generation {generation} yet")
    if stalled.get("status") == "True":
        return at(DEGRADED, stalled.get("reason", ""), stalled.get("message", ""))
    if ready.get("status") == "True" and not rollout:
        return at(HEALTHY, ready.get("reason", ""), ready.get("message", ""))
    return at(PROGRESSING, ready.get("reason") or "NoStatus", ready.get("message") or "the operator has not written a status yet")


def status_details(body: Obj, assessment: Assessment) -> str:
    metadata, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    rows = [
        ("Deployment", f"{metadata.get('name')} ({status.get('id') or 'no id yet'}), {spec.get('kind')}, "
                       f"policy {spec.get('promotionPolicy') or MANUAL}"),
        ("Promoted", spec.get("promotedVersion") or "-"),
        ("Live", assessment.live or "-"),
        ("Rollout", assessment.rollout or "-"),
        ("Reverted", ", ".join(status.get("revertedVersions") or []) or "-"),
        ("Status", f"{assessment.phase}  {assessment.reason}: {assessment.message}"),
    ]  # fmt: skip
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key + ':':<{width + 1}}  {value}" for key, value in rows)


def watch_line(body: Obj, assessment: Assessment) -> str:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    rollout = f" [rolling out {assessment.rollout}]" if assessment.rollout else ""
    return (
        f"{stamp}  {assessment.phase:<11}  {assessment.reason}: {assessment.message}  (live: {assessment.live or '-'}){rollout}"
    )


def status(cluster: Cluster, args: argparse.Namespace) -> int:
    body = cluster.get_deployment(args.deployment)
    shown = assess(body)
    _show_status(args, body, shown, first=True)
    if args.watch:
        deadline = time.monotonic() + args.timeout
        while shown.phase == PROGRESSING:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            resource_version = (body.get("metadata") or {}).get("resourceVersion") or "0"
            for changed in cluster.watch_deployment(args.deployment, resource_version, remaining):
                body = changed
                now = assess(body)
                if now.line() != shown.line():
                    shown = now
                    _show_status(args, body, shown, first=False)
                if shown.phase != PROGRESSING:
                    break
            else:  # the server ended the watch (or the resourceVersion expired): read again
                body = cluster.get_deployment(args.deployment)
                now = assess(body)
                if now.line() != shown.line():
                    shown = now
                    _show_status(args, body, shown, first=False)
        if shown.phase == PROGRESSING:
            raise PluginError(
                f"timed out after {args.timeout:g}s: deployment {args.deployment} is still progressing "
                f"({shown.reason}: {shown.message})",
                ExitCode.IN_PROGRESS,
            )
    if shown.phase == DEGRADED and args.output.human:
        print(f"error: deployment {args.deployment} is {shown.phase}: {shown.reason}: {shown.message}", file=sys.stderr)
    return int(EXIT_OF[shown.phase])


def _show_status(args: argparse.Namespace, body: Obj, assessment: Assessment, first: bool) -> None:
    if not args.output.human:
        if first or args.output.kind != "name":
            emit(args, body, [output.resource_name(body)])
    elif args.watch:
        print(watch_line(body, assessment), flush=True)
    else:
        print(status_details(body, assessment))


# ---------------------------------------------------------------------------- logs


def logs(cluster: Cluster, args: argparse.Namespace) -> int:
    body = cluster.get_version(args.version)
    spec, status = body.get("spec") or {}, body.get("status") or {}
    own, external = status.get("buildLogUri"), (spec.get("buildLog") or {}).get("uri")
    if not own and not external:
        state = status.get("state") or "created"
        when = " yet" if state in ("created", "building") else ""
        raise PluginError(f'deploymentversion "{args.version}" has no build log{when} (state: {state})', ExitCode.REFUSED)
    if not args.output.human:
        data = {"name": args.version, "id": status.get("id"), "build_log_uri": own, "external_build_log_uri": external}
        if args.output.kind != "name":
            data["log"] = _read_log(own).decode("utf-8", "replace") if own else None
        emit(args, data, [output.resource_name(meta.VERSION_KIND, args.version)])
        return 0
    if own:
        _copy_log(own)
    if external:
        if own:
            print(f"\n==> external build log (spec.buildLog.uri): {external} <==", flush=True)
        try:
            _copy_log(external)
        except PluginError as error:
            if not own:
                raise
            print(f"warning: {error}", file=sys.stderr)
    return 0


def _open_store() -> Any:
    try:
        from ..settings import Settings, SettingsError
        from ..store import StoreRouter
    except ImportError as exc:  # the light kubectl-miosa distribution without its `logs` extra
        raise PluginError(
            "reading build logs needs the artifact store client: pip install 'kubectl-miosa[logs]'", ExitCode.USAGE
        ) from exc
    try:
        return StoreRouter.from_settings(Settings.load())
    except SettingsError as exc:
        raise PluginError(f"cannot read build logs: {exc}", ExitCode.USAGE) from exc


def _with_store(uri: str, use: Callable[[Any], Any]) -> Any:
    store = _open_store()
    from ..store import ArtifactNotFound, StoreError, TransientStoreError

    try:
        with store.open_read(uri) as reader:
            return use(reader)
    except ArtifactNotFound as exc:
        raise PluginError(f"build log {uri} not found: {exc}", ExitCode.NOT_FOUND) from exc
    except TransientStoreError as exc:
        raise PluginError(f"cannot reach the artifact store for {uri}: {exc}", ExitCode.UNREACHABLE) from exc
    except StoreError as exc:
        raise PluginError(f"cannot read build log {uri}: {exc}", ExitCode.REFUSED) from exc


def _copy_log(uri: str) -> None:
    sys.stdout.flush()
    _with_store(uri, lambda reader: shutil.copyfileobj(reader, sys.stdout.buffer))
    sys.stdout.buffer.flush()


def _read_log(uri: str) -> bytes:
    return bytes(_with_store(uri, lambda reader: reader.read()))


def _now() -> datetime:
    return datetime.now(UTC)
