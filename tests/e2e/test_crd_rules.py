"""The real API server's verdicts on ``status.state`` moves, against the table the unit tests'
fake API server enforces (tests/unit/crd_rules.py, evaluated from the generated CRD's rule).

The rule is fed to the API server as it is generated, on a scratch CRD of its own: the
operator does not watch that kind, so nothing but this test writes the objects' status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from unit.crd_rules import STATES, TRANSITIONS, path_to, state_schema

from .helpers import wait_until

GROUP = "e2e.miosa.io"
PLURAL = "statemoves"


@pytest.fixture
def state_crd(api: client.ApiClient) -> Iterator[None]:
    """A namespaced kind whose ``status.state`` is the DeploymentVersion CRD's, rule and all."""
    extensions = client.ApiextensionsV1Api(api)
    name = f"{PLURAL}.{GROUP}"
    schema = {"type": "object", "properties": {"status": {"type": "object", "properties": {"state": state_schema()}}}}
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "statemove", "kind": "StateMove", "listKind": "StateMoveList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    try:
        extensions.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:  # left over from an interrupted run: the same definition
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_until(established, timeout=60, what=f"CRD {name} established")
    yield
    extensions.delete_custom_resource_definition(name)


def _write_state(objects: client.CustomObjectsApi, namespace: str, name: str, state: str) -> int:
    """The API server's answer to a status write of ``state``: 200, or the refusal's code."""
    try:
        objects.patch_namespaced_custom_object_status(GROUP, "v1", namespace, PLURAL, name, {"status": {"state": state}})
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_the_api_server_admits_exactly_the_state_moves_of_the_table(
    api: client.ApiClient, namespace: str, state_crd: None
) -> None:
    objects = client.CustomObjectsApi(api)
    verdicts: dict[tuple[str | None, str], bool] = {}
    for old, new in TRANSITIONS:
        name = f"m-{uuid.uuid4().hex[:8]}"

        def create(object_name: str = name) -> bool:  # the API server may take a moment to serve the new kind
            try:
                body = {"apiVersion": f"{GROUP}/v1", "kind": "StateMove", "metadata": {"name": object_name}}
                objects.create_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, body)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        wait_until(create, timeout=30, what="the new kind served")
        for state in path_to(old):
            assert _write_state(objects, namespace, name, state) == 200, (old, state)
        code = _write_state(objects, namespace, name, new)
        assert code in (200, 422), (old, new, code)
        verdicts[(old, new)] = code == 200
        stored = objects.get_namespaced_custom_object(GROUP, "v1", namespace, PLURAL, name).get("status") or {}
        assert stored.get("state") == (new if code == 200 else old), (old, new, stored)
    assert verdicts == TRANSITIONS
    assert len(verdicts) == (len(STATES) + 1) * len(STATES)
