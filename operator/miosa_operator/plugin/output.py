"""What the plugin prints: the seed's Version shape, tables, JSON and YAML.

Design decisions:

* ``-o json`` prints versions exactly in the seed's shape (snake_case keys, in the seed's
  order), built by ``api.seedshape``: the same code the HTTP API answers with, so a platform that
  consumed the hosted API can consume either unchanged.
  Extra keys come last and only add facts: ``name`` (the object to pass to other
  commands), ``runtime_args`` (the seed has no place for container args),
  ``artifacts_collected_at`` (retention) and ``published_by``.
* ``created_by`` is what the publisher *claimed* (``spec.attribution.createdBy``, kept as
  written); ``published_by`` is the Kubernetes user that created the object, recorded by
  the API server itself (``deploy.miosa.io/published-by``, set at creation by an admission
  policy and never changed after), so the history cannot be made to name someone else.
* How the seed's fields map onto the object, and the timestamp format: ``api.seedshape``.
* Tables follow kubectl: upper-case headers, three spaces between columns, ``<none>``-free
  (``-`` for empty), ages like ``5m`` and ``3d``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from ..api.seedshape import history_entries, seed_version, updated_at
from ..api.times import parse_time, rfc3339
from ..api.types import Obj

# ---------------------------------------------------------------------------- time (and the seed shape: api.seedshape)

__all__ = ["history_entries", "parse_time", "rfc3339", "seed_version", "updated_at"]  # re-exported


def age(value: Any, now: datetime) -> str:
    """kubectl's compact duration: 45s, 5m, 3h, 2d, 1y (coarser the older it gets)."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size, below in (("s", 1, 120), ("m", 60, 3 * 3600), ("h", 3600, 48 * 3600), ("d", 86400, 2 * 365 * 86400)):
        if seconds < below:
            return f"{seconds // size}{unit}"
    return f"{seconds // (365 * 86400)}y"


# ---------------------------------------------------------------------------- the seed shape


# ---------------------------------------------------------------------------- rendering


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v in (None, "") else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def versions_table(versions: Iterable[Obj], live: str | None, now: datetime) -> str:
    """NUMBER NAME STATE KIND WORKSPACE PROMOTED AGE, with ``(live)`` after the live one's state."""
    rows = []
    for version in versions:
        state = version.get("state") or "-"
        if live and version.get("name") == live:
            state = f"{state} (live)"
        promoted = age(version.get("promoted_at"), now) if version.get("promoted_at") else None
        rows.append(
            (
                version.get("version_number"),
                version.get("name"),
                state,
                version.get("kind"),
                version.get("external_workspace_id"),
                promoted and f"{promoted} ago",
                age(version.get("created_at"), now),
            )
        )
    return table(("NUMBER", "NAME", "STATE", "KIND", "WORKSPACE", "PROMOTED", "AGE"), rows)


def version_details(version: Mapping[str, Any], live: bool = False) -> str:
    """``versions show``: one field per line, seed names, nested maps inline as JSON."""
    width = max(len(key) for key in version)
    lines = []
    for key, value in version.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else ("-" if value in (None, "") else str(value))
        if key == "state" and live:
            shown += " (live)"
        lines.append(f"{key + ':':<{width + 1}}  {shown}")
    return "\n".join(lines)


def history_table(entries: Iterable[Mapping[str, Any]]) -> str:
    rows = [(e["time"], e["action"], e["version"], e["number"], e["actor"], e["reason"]) for e in entries]
    return table(("TIME", "ACTION", "VERSION", "NUMBER", "ACTOR", "REASON"), rows)


def dump(data: Any, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------------------- -o / --output

FORMATS = ("json", "yaml", "name", "jsonpath=TEMPLATE")


@dataclass(frozen=True)
class Format:
    """``-o``: ``default`` (the command's human output), json, yaml, name or jsonpath."""

    kind: str = "default"
    template: str = ""

    @property
    def human(self) -> bool:
        return self.kind == "default"


def parse_format(raw: str) -> Format:
    """``-o`` as kubectl takes it: ``json``, ``yaml``, ``name``, ``jsonpath=…`` (also ``jsonpath='…'``)."""
    value = raw.strip()
    if value in ("table", "wide", ""):
        return Format()
    if value in ("json", "yaml", "name"):
        return Format(value)
    kind, sep, template = value.partition("=")
    if kind == "jsonpath" and sep:
        if len(template) >= 2 and template[0] == template[-1] and template[0] in "'\"":
            template = template[1:-1]
        from .jsonpath import JsonPathError, parse

        try:
            parse(template)
        except JsonPathError as exc:
            raise ValueError(f"invalid jsonpath template: {exc}") from exc
        return Format("jsonpath", template)
    raise ValueError(f"unsupported output format {raw!r}: use one of {', '.join(FORMATS)}")


def resource_name(body_or_kind: Obj | str, name: str | None = None) -> str:
    """kubectl's ``-o name`` spelling: ``deploymentversion.deploy.miosa.io/site-v3``."""
    if isinstance(body_or_kind, dict):
        kind, name = body_or_kind.get("kind") or "", (body_or_kind.get("metadata") or {}).get("name", "")
    else:
        kind = body_or_kind
    return f"{kind.lower()}.deploy.miosa.io/{name}"


def formatted(data: Any, fmt: Format, names: Sequence[str]) -> str:
    """``data`` (what ``-o json`` prints) in a machine format; ``names`` for ``-o name``."""
    if fmt.kind == "name":
        return "\n".join(names)
    if fmt.kind == "jsonpath":
        from .jsonpath import render

        return render(fmt.template, data)
    return dump(data, fmt.kind)
