"""The committed CRDs are exactly what the models generate, and carry the rules we rely on."""

from __future__ import annotations

from pathlib import Path

import yaml

from miosa_operator.api import crdgen
from miosa_operator.api.models import IMMUTABLE_SPEC_MESSAGE

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    for name, doc in crdgen.all_crds().items():
        committed = (CRDS / name).read_text()
        assert committed == crdgen.render(doc), f"crds/{name} drifted from the models: run `make crds`"


def _walk(schema: dict) -> list[dict]:
    found = [schema]
    for sub in (schema.get("properties") or {}).values():
        found += _walk(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _walk(schema[key])
    return found


def test_schemas_are_structural() -> None:
    for doc in crdgen.all_crds().values():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for node in _walk(schema):
            assert "type" in node or node.get("x-kubernetes-int-or-string") is True, node
            assert not {"$ref", "anyOf", "allOf", "oneOf", "title"} & node.keys(), node


def test_version_crd_carries_the_api_server_rules() -> None:
    crd = crdgen.version_crd()
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    spec_rules = [r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert "self == oldSelf" in spec_rules
    assert schema["properties"]["spec"]["x-kubernetes-validations"][0]["message"] == IMMUTABLE_SPEC_MESSAGE
    state = schema["properties"]["status"]["properties"]["state"]
    assert state["x-kubernetes-validations"][0]["optionalOldSelf"] is True
    assert state["enum"] == ["created", "building", "ready", "failed", "archived"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["dver", "dv"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Number", "State", "Kind", "Workspace", "Age"} <= columns


def test_crd_files_are_valid_yaml_documents() -> None:
    for path in CRDS.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["kind"] == "CustomResourceDefinition"


def _undescribed(schema: dict, path: str) -> list[str]:
    missing = []
    for name, sub in (schema.get("properties") or {}).items():
        where = f"{path}.{name}"
        if where.count(".") == 1 and name == "metadata":
            continue  # the API server forbids anything but `type` on the root metadata (ObjectMeta's own docs apply)
        if not sub.get("description"):
            missing.append(where)
        missing += _undescribed(sub, where)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            missing += _undescribed(schema[key], path + suffix)
    return missing


def test_every_property_has_a_description() -> None:
    """`kubectl explain` shows every field; a new model field without a description fails here."""
    missing = []
    for doc in crdgen.all_crds().values():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        missing += _undescribed(schema, doc["spec"]["names"]["kind"])
    assert not missing, f"properties without a description (add Field(description=...) in api/models.py): {missing}"
