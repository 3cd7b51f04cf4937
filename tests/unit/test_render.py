from __future__ import annotations

from typing import Any

from miosa_operator.api.models import Deployment, DeploymentVersion
from miosa_operator.render import runtime, workloads
from miosa_operator.render.names import bounded

V1, V2 = "ver_" + "1" * 26, "ver_" + "2" * 26
RELEASE = f"s3://rel/acme/dep/{V1}/dist.tar.zst"
SERVER = runtime.StaticServer("miosa/operator:1", (("MIOSA_S3_ENDPOINT", "http://s3:9000"),), "miosa-store")


def deployment(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {"metadata": {"name": "site", "namespace": "acme", "uid": "dep-uid", "generation": 3}, "spec": {"kind": "static", **spec}}
    )


def static_version() -> DeploymentVersion:
    return DeploymentVersion.model_validate(
        {
            "metadata": {"name": "site-v1", "namespace": "acme", "uid": "v-uid"},
            "spec": {"deploymentRef": {"name": "site"}, "kind": "static", "artifact": {"uri": "s3://uploads/x.tar", "sha256": "a" * 64}},
            "status": {
                "id": V1,
                "versionNumber": 7,
                "state": "ready",
                "artifactUri": RELEASE,
                "artifactSha256": "b" * 64,
                "artifactManifest": {"files": 2, "totalBytes": 10, "entrypoint": "home.html"},
            },
        }
    )


def dynamic_version(**runtime_: Any) -> DeploymentVersion:
    return DeploymentVersion.model_validate(
        {
            "metadata": {"name": "api-v2", "namespace": "acme", "uid": "v2-uid"},
            "spec": {
                "deploymentRef": {"name": "site"},
                "kind": "dynamic",
                "runtime": {"image": "app:2", "command": ["/app"], "port": 9000, "healthCheckPath": "/ready", "env": [{"name": "A", "value": "1"}], **runtime_},
            },
            "status": {"id": V2, "versionNumber": 2, "state": "ready"},
        }
    )


def test_static_workload_fetches_verifies_and_serves() -> None:
    body = runtime.live_workload(deployment(replicas=3), static_version(), SERVER)
    pod = body["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["command"] == [
        "miosa-operator", "fetch", "--uri", RELEASE, "--sha256", "b" * 64, "--dest", "/srv/site"
    ]
    assert fetch["env"] == [{"name": "MIOSA_S3_ENDPOINT", "value": "http://s3:9000"}]
    assert fetch["envFrom"] == [{"secretRef": {"name": "miosa-store", "optional": True}}]
    server = pod["containers"][0]
    assert server["command"][-2:] == ["--entrypoint", "home.html"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert body["spec"]["replicas"] == 3
    assert body["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert body["spec"]["template"]["metadata"]["annotations"]["deploy.miosa.io/version-id"] == V1
    assert body["metadata"]["ownerReferences"][0]["uid"] == "dep-uid"


def test_dynamic_workload_uses_frozen_runtime() -> None:
    dep = deployment(kind="dynamic", nodeSelector={"pool": "web"})
    body = runtime.live_workload(dep, dynamic_version(), SERVER)
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "app:2" and container["command"] == ["/app"]
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}
    assert body["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "web"}
    service = runtime.live_service(dep, runtime.serving_port(dep, dynamic_version()))
    assert service["spec"]["ports"][0]["targetPort"] == 9000
    assert service["spec"]["selector"] == runtime.selector(dep)


def test_rendering_is_stable_and_changes_with_the_version() -> None:
    a = runtime.live_workload(deployment(kind="dynamic"), dynamic_version(), SERVER)
    b = runtime.live_workload(deployment(kind="dynamic"), dynamic_version(), SERVER)
    c = runtime.live_workload(deployment(kind="dynamic"), dynamic_version(image="app:3"), SERVER)
    key = runtime.ANNOTATION_RENDERED_HASH
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key] != c["metadata"]["annotations"][key]


def test_rolled_out_needs_the_right_version_on_every_replica() -> None:
    body = runtime.live_workload(deployment(kind="dynamic", replicas=2), dynamic_version(), SERVER)
    body["metadata"]["generation"] = 4
    body["status"] = {"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert runtime.rolled_out(body, V2, 2)
    assert not runtime.rolled_out(body, V1, 2)
    body["status"]["replicas"] = 3  # an old pod still around
    assert not runtime.rolled_out(body, V2, 2)
    body["status"] = {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert not runtime.rolled_out(body, V2, 2)


def test_verification_workload_is_owned_by_the_version() -> None:
    body = workloads.verification_workload(dynamic_version(), 60)
    assert body["metadata"]["ownerReferences"][0]["kind"] == "DeploymentVersion"
    assert body["spec"]["progressDeadlineSeconds"] == 60
    assert body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_bounded_names_stay_unique_and_short() -> None:
    long_a, long_b = "a" * 80, "a" * 79 + "b"
    assert len(bounded(long_a, "verify")) <= 63
    assert bounded(long_a, "verify") != bounded(long_b, "verify")
    assert bounded("short", "verify") == "short-verify"


def test_security_contexts_meet_pod_security_restricted() -> None:
    from miosa_operator.render.security import container_security_context, pod_security_context

    pod = pod_security_context(run_as_user=65532)
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"} and pod["runAsUser"] == 65532
    container = container_security_context()
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}
    assert container["readOnlyRootFilesystem"] is True
    assert container_security_context(read_only_root=False)["readOnlyRootFilesystem"] is False
