"""kube.lazy_client: the operator's ``kubernetes`` without every API and model (a fresh
interpreter each, since the stand-ins must be installed before anything imports the package)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_operator_imports_a_few_models_and_apis_and_they_are_the_real_ones() -> None:
    out = run(
        """
        import json, sys
        from miosa_operator.kube import lazy_client
        assert lazy_client.install() and not lazy_client.install()
        import kopf, miosa_operator.handlers  # everything the operator process imports
        loaded = [m for m in sys.modules if m.startswith(("kubernetes.client.models.", "kubernetes.client.api."))]
        from kubernetes import client, config
        from kubernetes.client.models.v1_object_meta import V1ObjectMeta
        from kubernetes.client.exceptions import ApiException
        assert client.V1ObjectMeta is V1ObjectMeta and client.ApiException is ApiException
        assert client.models.V1ObjectMeta is V1ObjectMeta and client.CoreV1Api.__module__ == "kubernetes.client.api.core_v1_api"
        assert callable(config.load_kube_config)
        import kubernetes
        assert kubernetes.__version__.split(".")[0].isdigit()
        # The generated client deserialises into models it loads on demand.
        class Response:
            data = json.dumps({"metadata": {"name": "lease"}, "spec": {"holderIdentity": "me"}})
        lease = client.ApiClient().deserialize(Response(), "V1Lease")
        assert lease.spec.holder_identity == "me" and type(lease).__name__ == "V1Lease"
        try:
            client.NoSuchThing
        except AttributeError:
            pass
        else:
            raise AssertionError("a missing name must be an AttributeError")
        import kubernetes.watch  # the other submodules import as usual
        print(len(loaded))
        """
    )
    assert int(out) < 20  # against ~830 with the real __init__


def test_nothing_is_replaced_once_kubernetes_is_imported() -> None:
    run(
        """
        import kubernetes.client, sys
        from miosa_operator.kube import lazy_client
        assert not lazy_client.install()
        assert type(sys.modules["kubernetes.client"]).__name__ == "module"
        """
    )
