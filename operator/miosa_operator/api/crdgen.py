"""Generate the CustomResourceDefinitions under ``crds/`` from the pydantic models.

Pydantic emits JSON Schema (with ``$defs``/``$ref``, ``anyOf`` for optionals, titles); the
API server wants a *structural* OpenAPI v3 schema (everything inlined, one type per node, no
nulls).  ``structural()`` is that translation and nothing more, so the models stay the only
place where a field is described.  Run ``python -m miosa_operator.api.crdgen crds/`` (or
``make crds``); ``tests/unit/test_crds.py`` fails when the committed files drift.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from . import meta
from .models import (
    DeploymentSpec,
    DeploymentStatus,
    DeploymentVersionSpec,
    DeploymentVersionStatus,
    RetentionPolicySpec,
    RetentionPolicyStatus,
)

_DROP = {"title", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inline refs, collapse optionals and drop what a structural schema may not carry."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        target = dict(defs[schema["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return structural({**target, **extra}, defs)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of anyOf {schema['anyOf']}")
        merged = {**options[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
        return structural(merged, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "enum" in out and out["type"] == "string":
        # Bounded strings keep the API server's CEL cost estimate low.
        out.setdefault("maxLength", max(len(v) for v in out["enum"]))
    if "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if out.get("type") == "array" and "maxItems" not in out and "maxLength" in out:
        out["maxItems"] = out.pop("maxLength")
    if out.get("type") == "object" and "maxLength" in out:
        out["maxProperties"] = out.pop("maxLength")
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


# The standard texts of every Kubernetes object's apiVersion and kind (as in the built-in
# types), so `kubectl explain` describes every property of our CRDs.
API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert "
    "recognized schemas to the latest internal value, and may reject unrecognized values."
)
KIND_DOC = "Kind is a string value representing the REST resource this object represents. In CamelCase."


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    selectable: list[str],
    root_rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": API_VERSION_DOC},
            "kind": {"type": "string", "description": KIND_DOC},
            # The API server allows nothing but `type` here: explain shows ObjectMeta's own text.
            "metadata": {"type": "object"},
            "spec": model_schema(spec),
            "status": model_schema(status),
        },
    }
    if root_rules:
        schema["x-kubernetes-validations"] = root_rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{meta.GROUP}"},
        "spec": {
            "group": meta.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["miosa"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": meta.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    **({"selectableFields": [{"jsonPath": p} for p in selectable]} if selectable else {}),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _column(name: str, path: str, type_: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


AGE = _column("Age", ".metadata.creationTimestamp", "date")
# Why an object is (not) ready, at a glance: the Ready condition's reason (kstatus table in
# api.conditions); the message with -o wide.
REASON = _column("Reason", '.status.conditions[?(@.type=="Ready")].reason')
MESSAGE = _column("Message", '.status.conditions[?(@.type=="Ready")].message', priority=1)


def version_crd() -> dict[str, Any]:
    return _crd(
        kind=meta.VERSION_KIND,
        plural=meta.VERSION_PLURAL,
        short_names=["dver", "dv"],
        description="An immutable, numbered publish of a Deployment with a verified artifact.",
        spec=DeploymentVersionSpec,
        status=DeploymentVersionStatus,
        columns=[
            _column("Deployment", ".spec.deploymentRef.name"),
            _column("Number", ".status.versionNumber", "integer"),
            _column("State", ".status.state"),
            _column("Kind", ".spec.kind"),
            REASON,
            _column("Workspace", ".spec.attribution.externalWorkspaceId"),
            _column("Promoted", ".status.promotedAt", "date", priority=1),
            _column("Id", ".status.id", priority=1),
            MESSAGE,
            AGE,
        ],
        # .status.id: the HTTP API resolves a ver_ id with one field-selected LIST.
        selectable=[".spec.deploymentRef.name", ".spec.kind", ".status.state", ".status.id"],
    )


def deployment_crd() -> dict[str, Any]:
    return _crd(
        kind=meta.DEPLOYMENT_KIND,
        plural=meta.DEPLOYMENT_PLURAL,
        short_names=["mdep"],
        description="A site or app whose live DeploymentVersion is chosen by promotion.",
        spec=DeploymentSpec,
        status=DeploymentStatus,
        columns=[
            _column("Kind", ".spec.kind"),
            _column("Promoted", ".spec.promotedVersion"),
            _column("Live", ".status.liveVersion"),
            _column("Policy", ".spec.promotionPolicy"),
            _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            REASON,
            _column("Id", ".status.id", priority=1),
            MESSAGE,
            AGE,
        ],
        # .status.id: the HTTP API resolves a dep_ id with one field-selected LIST.
        selectable=[".spec.kind", ".status.id"],
    )


def retention_crd() -> dict[str, Any]:
    return _crd(
        kind=meta.RETENTION_KIND,
        plural=meta.RETENTION_PLURAL,
        short_names=["mret"],
        description=(
            "How long a tenant keeps release artifacts of versions that are not live. The policy named "
            f"'{meta.RETENTION_POLICY_NAME}' applies to its namespace; without one, the operator-wide default applies."
        ),
        spec=RetentionPolicySpec,
        status=RetentionPolicyStatus,
        columns=[
            _column("Days", ".spec.retainDays", "integer"),
            _column("Window", ".spec.rollbackWindow", "integer"),
            _column("Last sweep", ".status.lastSweepAt", "date"),
            AGE,
        ],
        selectable=[],
        root_rules=[
            {
                "rule": f"self.metadata.name == '{meta.RETENTION_POLICY_NAME}'",
                "message": f"a namespace has one RetentionPolicy and it must be named '{meta.RETENTION_POLICY_NAME}'",
            }
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD document."""
    return {
        f"{meta.GROUP}_{meta.VERSION_PLURAL}.yaml": version_crd(),
        f"{meta.GROUP}_{meta.DEPLOYMENT_PLURAL}.yaml": deployment_crd(),
        f"{meta.GROUP}_{meta.RETENTION_PLURAL}.yaml": retention_crd(),
    }


HEADER = "# Generated from operator/miosa_operator/api/models.py by `make crds`. Do not edit.\n"


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in all_crds().items():
        path = directory / name
        path.write_text(render(doc))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "crds")):
        print(p)
