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
* ``--wait`` polls the Deployment until the operator has completed the rollout, and fails
  early (exit 1) when the operator has seen the change and refused or reverted it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..api import meta
from ..api.conditions import ConditionType
from ..api.models import PromotionPolicy
from ..settings import Settings, SettingsError
from ..store import ArtifactNotFound, StoreError, StoreRouter, TransientStoreError
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

Obj = dict[str, Any]
POLL_INTERVAL = 1.0


# ---------------------------------------------------------------------------- versions


def versions_list(cluster: Cluster, args: argparse.Namespace) -> int:
    attribution = AttributionFilter(args.workspace, args.user, args.project)
    items = cluster.list_versions(version_selector(args.deployment, attribution), state_selector(args.state))
    versions = [output.seed_version(v) for v in newest_first(v for v in items if belongs(v, args.deployment, attribution))]
    # The Deployment is read only when needed: for the live marker, or to tell an unknown
    # Deployment (exit 3) from one without matching versions (an empty list).
    live = None
    if args.output == "table" or not versions:
        live = _live_version(cluster, args.deployment, must_exist=not versions)
    if args.output != "table":
        print(output.dump(versions, args.output))
    elif versions:
        print(output.versions_table(versions, live, _now()))
    else:
        print(f'No versions of deployment "{args.deployment}" match in namespace "{cluster.namespace}".', file=sys.stderr)
    return 0


def versions_show(cluster: Cluster, args: argparse.Namespace) -> int:
    body = cluster.get_version(args.version)
    version = output.seed_version(body)
    if args.output != "table":
        print(output.dump(version, args.output))
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
    if args.output != "table":
        print(output.dump(entries, args.output))
    elif entries:
        print(output.history_table(entries))
    else:
        print(f'deployment "{args.deployment}" has no promotion history yet', file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- promote / rollback


def promotion_patch(version: str, reason: str | None, switch_to_manual: bool = False) -> Obj:
    spec: Obj = {"promotedVersion": version}
    if switch_to_manual:
        spec["promotionPolicy"] = PromotionPolicy.MANUAL.value
    return {"metadata": {"annotations": {meta.ANNOTATION_CHANGE_CAUSE: reason or None}}, "spec": spec}


def promote(cluster: Cluster, args: argparse.Namespace) -> int:
    cluster.get_version(args.version)  # unknown name: exit 3, not a webhook 422
    patched = cluster.patch_deployment(args.deployment, promotion_patch(args.version, args.reason))
    if (patched.get("spec") or {}).get("promotionPolicy") == PromotionPolicy.AUTO.value:
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
    auto = (deployment.get("spec") or {}).get("promotionPolicy") == PromotionPolicy.AUTO.value
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
    if not args.wait:
        print(f"{what} requested")
        return 0
    generation = int((patched.get("metadata") or {}).get("generation") or 0)
    body = wait_for_rollout(lambda: cluster.get_deployment(args.deployment), version, generation, args.timeout)
    print(completed_message(body, version))
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


def wait_for_rollout(
    fetch: Callable[[], Obj],
    version: str,
    generation: int,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Obj:
    deadline = clock() + timeout
    while True:
        body = fetch()
        outcome = rollout_outcome(body, version, generation)
        if outcome is not None and outcome.done:
            return body
        if outcome is not None:
            raise PluginError(f"{version} did not go live: {outcome.message}", ExitCode.REFUSED)
        if clock() >= deadline:
            ready = _condition(body.get("status") or {}, ConditionType.READY).get("message") or "no Ready condition yet"
            raise PluginError(f"timed out after {timeout:g}s waiting for {version} to go live ({ready})", ExitCode.REFUSED)
        sleep(POLL_INTERVAL)


def completed_message(body: Obj, version: str) -> str:
    status = body.get("status") or {}
    last = (status.get("history") or [{}])[-1]
    name = body.get("metadata", {}).get("name", "")
    number = status.get("liveVersionNumber")
    line = f"{version} (#{number}) is live on deployment {name}" if number else f"{version} is live on deployment {name}"
    if last.get("version") == version:
        line += f" ({last.get('action')}" + (f" by {last['actor']}" if last.get("actor") else "") + ")"
    return line


# ---------------------------------------------------------------------------- logs


def logs(cluster: Cluster, args: argparse.Namespace) -> int:
    body = cluster.get_version(args.version)
    uri = output.seed_version(body)["build_log_uri"]
    if not uri:
        state = (body.get("status") or {}).get("state") or "created"
        when = " yet" if state in ("created", "building") else ""
        raise PluginError(f'deploymentversion "{args.version}" has no build log{when} (state: {state})', ExitCode.REFUSED)
    try:
        store = StoreRouter.from_settings(Settings.load())
    except SettingsError as exc:
        raise PluginError(f"cannot read build log {uri}: {exc}", ExitCode.USAGE) from exc
    try:
        with store.open_read(uri) as reader:
            sys.stdout.flush()
            shutil.copyfileobj(reader, sys.stdout.buffer)
    except ArtifactNotFound as exc:
        raise PluginError(f"build log {uri} not found: {exc}", ExitCode.NOT_FOUND) from exc
    except TransientStoreError as exc:
        raise PluginError(f"cannot reach the artifact store for {uri}: {exc}", ExitCode.UNREACHABLE) from exc
    except StoreError as exc:
        raise PluginError(f"cannot read build log {uri}: {exc}", ExitCode.REFUSED) from exc
    return 0


def _now() -> datetime:
    return datetime.now(timezone.utc)
