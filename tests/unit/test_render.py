from __future__ import annotations

from typing import Any

from miosa_operator.api import meta
from miosa_operator.api.models import Deployment, DeploymentVersion
from miosa_operator.render import live, verification
from miosa_operator.render.names import bounded

V1, V2 = "ver_" + "1" * 26, "ver_" + "2" * 26
RELEASE = f"s3://rel/acme/dep/{V1}/dist.tar.zst"
ENDPOINT = "http://miosa-operator-artifacts.miosa-system.svc:8081"
SERVER = live.StaticServer("miosa/operator:1", ENDPOINT, "miosa-artifacts", (("MIOSA_MAX_MEMBERS", "20000"),))
DEP_ID = "dep_" + "0" * 26


def deployment(**spec: Any) -> Deployment:
    return Deployment.model_validate(
        {"metadata": {"name": "site", "namespace": "acme", "uid": "dep-uid", "generation": 3}, "spec": {"kind": "static", **spec}}
    )


def static_version() -> DeploymentVersion:
    return DeploymentVersion.model_validate(
        {
            "metadata": {"name": "site-v1", "namespace": "acme", "uid": "v-uid"},
            "spec": {
                "deploymentRef": {"name": "site"},
                "kind": "static",
                "artifact": {"uri": "s3://uploads/x.tar", "sha256": "a" * 64},
            },
            "status": {
                "id": V1,
                "deploymentId": DEP_ID,
                "versionNumber": 7,
                "state": "ready",
                "artifactUri": RELEASE,
                "artifactSha256": "b" * 64,
                "artifactManifest": {"files": 2, "totalBytes": 100 << 20, "entrypoint": "home.html"},
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
                "runtime": {
                    "image": "app:2",
                    "command": ["/app"],
                    "port": 9000,
                    "healthCheckPath": "/ready",
                    "env": [{"name": "A", "value": "1"}],
                    **runtime_,
                },
            },
            "status": {"id": V2, "versionNumber": 2, "state": "ready"},
        }
    )


def test_static_workload_fetches_verifies_and_serves() -> None:
    body = live.live_workload(deployment(replicas=3), static_version(), SERVER)
    pod = body["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["command"] == [
        "miosa-operator",
        "fetch",
        "--release",
        f"acme/{DEP_ID}/{V1}",
        "--sha256",
        "b" * 64,
        "--dest",
        "/srv/site",
    ]
    assert fetch["env"] == [
        {"name": "MIOSA_ARTIFACTS_URL", "value": ENDPOINT},
        {"name": "MIOSA_ARTIFACTS_TOKEN_FILE", "value": "/var/run/secrets/miosa/artifacts/token"},
        {"name": "MIOSA_MAX_MEMBERS", "value": "20000"},  # the operator's own limits, not fetch's defaults
    ]
    server = pod["containers"][0]
    assert server["command"][:8] == [
        "miosa-operator",
        "serve",
        "--dir",
        "/srv/site",
        "--port",
        "8080",
        "--entrypoint",
        "home.html",
    ]
    assert server["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert body["spec"]["replicas"] == 3
    assert body["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert body["spec"]["template"]["metadata"]["annotations"]["deploy.miosa.io/version-id"] == V1
    assert body["metadata"]["ownerReferences"][0]["uid"] == "dep-uid"


def test_static_pods_hold_no_credentials_and_run_no_tenant_code_near_the_release() -> None:
    pod = live.static_pod_spec(deployment(static={"image": "tenant/evil:1"}), static_version(), SERVER)
    fetch, server = pod["initContainers"][0], pod["containers"][0]
    assert fetch["image"] == "miosa/operator:1"  # the tenant's image never sees the token or the download
    assert server["image"] == "tenant/evil:1"
    assert "envFrom" not in fetch and "env" not in server
    assert not any("S3" in var["name"] or "SECRET" in var["name"] for var in fetch["env"])
    assert pod["automountServiceAccountToken"] is False  # no API token anywhere in the pod
    [token] = [v for v in pod["volumes"] if v["name"] == "artifacts-token"]
    assert token["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "miosa-artifacts", "expirationSeconds": 600, "path": "token"}}
    ]
    assert [m["name"] for m in fetch["volumeMounts"]] == ["site", "artifacts-token"]
    assert "artifacts-token" not in [m["name"] for m in server["volumeMounts"]]
    assert {"name": "site", "mountPath": "/srv", "readOnly": True} in server["volumeMounts"]


def test_a_refused_fetch_says_why_in_the_pod_status() -> None:
    (fetch,) = live.static_pod_spec(deployment(), static_version(), SERVER)["initContainers"]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"  # the log's tail, kept in the status


def test_static_pods_meet_pod_security_restricted() -> None:
    pod = live.static_pod_spec(deployment(), static_version(), SERVER)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in [*pod["initContainers"], *pod["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True
        assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]
    for volume in pod["volumes"]:
        assert "hostPath" not in volume
        if "emptyDir" in volume:
            assert volume["emptyDir"]["sizeLimit"]


def test_the_site_volume_is_sized_from_the_release() -> None:
    pod = live.static_pod_spec(deployment(), static_version(), SERVER)
    [site] = [v for v in pod["volumes"] if v["name"] == "site"]
    assert site["emptyDir"]["sizeLimit"] == "217Mi"  # 2 x (100 MiB + 2 files x 4 KiB) + 16 MiB, rounded up
    assert live.site_size_limit(0, 0) == "16Mi"
    assert live.site_size_limit(10_000, 2 << 30) == f"{(2 * ((2 << 30) + 10_000 * 4096) + (16 << 20) + (1 << 20) - 1) >> 20}Mi"


def test_dynamic_workload_uses_frozen_runtime() -> None:
    dep = deployment(kind="dynamic", nodeSelector={"pool": "web"})
    body = live.live_workload(dep, dynamic_version(), SERVER)
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "app:2" and container["command"] == ["/app"]
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9000}
    assert body["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "web"}
    service = live.live_service(dep, live.serving_port(dep, dynamic_version()))
    assert service["spec"]["ports"][0]["targetPort"] == 9000
    assert service["spec"]["selector"] == live.selector(dep)


def test_rendering_is_stable_and_changes_with_the_version() -> None:
    a = live.live_workload(deployment(kind="dynamic"), dynamic_version(), SERVER)
    b = live.live_workload(deployment(kind="dynamic"), dynamic_version(), SERVER)
    c = live.live_workload(deployment(kind="dynamic"), dynamic_version(image="app:3"), SERVER)
    key = meta.ANNOTATION_RENDERED_HASH
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key] != c["metadata"]["annotations"][key]


def test_rolled_out_needs_the_right_version_on_every_replica() -> None:
    body = live.live_workload(deployment(kind="dynamic", replicas=2), dynamic_version(), SERVER)
    body["metadata"]["generation"] = 4
    body["status"] = {"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert live.rolled_out(body, V2, 2)
    assert not live.rolled_out(body, V1, 2)
    body["status"]["replicas"] = 3  # an old pod still around
    assert not live.rolled_out(body, V2, 2)
    body["status"] = {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert not live.rolled_out(body, V2, 2)


def test_verification_workload_is_owned_by_the_version() -> None:
    body = verification.verification_workload(dynamic_version(), 60)
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
