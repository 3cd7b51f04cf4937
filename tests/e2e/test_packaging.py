"""Packaging against the real API server: the Helm chart, the kustomize base and the RBAC
they install (the product's deployments:read / deployments:write scopes).

The chart is rendered with the helm built by hack/build-binaries.sh and validated with
server-side dry runs; only the ClusterRoles (and, for the operator's own role, its binding)
are applied for real, and removed again at the end.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import REPO, UPLOADS_BUCKET, Environment, OperatorProcess
from .helpers import GROUP, VERSION, Objects, sha256, static_spec, tar_gz, wait_until

CHART = REPO / "charts" / "miosa-operator"
MANIFESTS = REPO / "manifests"
RELEASE = "miosa-operator"
USER_ROLES = ("miosa-deployments-read", "miosa-deployments-write", "miosa-retention-admin")


# ----------------------------------------------------------------------------- rendering


def helm(env: Environment, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = env.bin_dir / "helm"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run hack/build-binaries.sh")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=check, timeout=120)


def render(env: Environment, namespace: str, *values: str, crds: bool = False) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    for value in values:
        args += ["--set", value]
    return helm(env, *args).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


ADMISSION_KINDS = (
    "ValidatingWebhookConfiguration", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
)  # fmt: skip


def dry_run(env: Environment, manifest: str) -> str:
    """A server-side dry run of a rendering.  The cluster-scoped admission objects are renamed
    so they are validated as new objects, never merged into the ones the suite installed."""
    docs = documents(manifest)
    for doc in docs:
        if doc["kind"] in ADMISSION_KINDS:
            doc["metadata"]["name"] += "-dry-run"
            if "policyName" in doc.get("spec", {}):
                doc["spec"]["policyName"] += "-dry-run"
    result = env.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def container_env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_helm_is_the_pinned_release(env: Environment) -> None:
    pins = dict(line.split("=", 1) for line in (REPO / "hack" / "versions.env").read_text().splitlines() if "=" in line)
    assert helm(env, "version", "--template", "{{.Version}}").stdout.strip() == f"v{pins['HELM_VERSION']}"


def test_helm_chart_with_crds_is_accepted_by_the_api_server(env: Environment, crds: None, namespace: str) -> None:
    text = render(env, namespace, crds=True)
    docs = documents(text)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == len(list((REPO / "crds").glob("*.yaml")))
    assert {d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")} == {*USER_ROLES, RELEASE}
    assert {"ServiceAccount", "ClusterRoleBinding", "Deployment", "Service", "Secret"} <= set(kinds)
    out = dry_run(env, text)
    assert "deployment.apps/miosa-operator created (server dry run)" in out
    assert "customresourcedefinition.apiextensions.k8s.io/deploymentversions.deploy.miosa.io" in out

    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["miosa-operator", "run", "--standalone", "--liveness", "http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
    variables = container_env(deployment)
    host = f"{RELEASE}-webhook.{namespace}.svc"
    assert variables["MIOSA_WEBHOOK_HOST"] == host
    # The webhook listens on the pod's own address only.
    assert (
        variables["MIOSA_WEBHOOK_ADDR"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        and variables["MIOSA_WEBHOOK_PORT"] == "9443"
    )
    assert variables["MIOSA_WEBHOOK_CONFIGURATION"] == RELEASE and "MIOSA_WEBHOOK_CLIENT_CA" not in variables
    assert variables["MIOSA_RELEASES_URI"] == "file:///var/lib/miosa-operator/releases"
    assert (variables["MIOSA_RETENTION_DAYS"], variables["MIOSA_ROLLBACK_WINDOW"]) == ("30", "5")
    assert variables["MIOSA_HEALTH_GATE_TIMEOUT"] == "120"
    assert "MIOSA_S3_ACCESS_KEY_ID" not in variables and "MIOSA_S3_ENDPOINT" not in variables  # no S3 configured
    # The embedded default store keeps its releases on a claim, and serves them to static pods
    # through the artifact endpoint's Service.
    (claim,) = by_kind(docs, "PersistentVolumeClaim")
    assert {"name": "releases", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in pod["volumes"]
    assert variables["MIOSA_ARTIFACTS_URL"] == f"http://{RELEASE}-artifacts.{namespace}.svc:8081"
    assert variables["MIOSA_ARTIFACTS_ADDR"] == "0.0.0.0" and variables["MIOSA_ARTIFACTS_AUDIENCE"] == "miosa-artifacts"
    assert {"name": "artifacts", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    webhook, artifacts = services[f"{RELEASE}-webhook"], services[f"{RELEASE}-artifacts"]
    assert {(p["port"], p["targetPort"]) for p in webhook["spec"]["ports"]} == {(443, "webhook")}
    assert {(p["port"], p["targetPort"]) for p in artifacts["spec"]["ports"]} == {(8081, "artifacts")}
    role = next(r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == RELEASE)
    assert {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]} in role["rules"]
    metrics_service = services[f"{RELEASE}-metrics"]
    assert [(p["port"], p["targetPort"]) for p in metrics_service["spec"]["ports"]] == [(8082, "metrics")]
    assert {"name": "metrics", "containerPort": 8082, "protocol": "TCP"} in container["ports"]
    assert (variables["MIOSA_METRICS_ADDR"], variables["MIOSA_METRICS_PORT"], variables["MIOSA_LOG_FORMAT"]) == (
        "0.0.0.0",
        "8082",
        "text",
    )

    # The generated certificate is valid for the Service's DNS name and chains to ca.crt.
    (secret,) = by_kind(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert pod["volumes"][-1]["secret"]["secretName"] == secret["metadata"]["name"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    assert host in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(ca)

    # The admission objects: installed by the chart (they survive operator restarts); the
    # webhook configuration trusts the generated CA and sees only promotions.
    (webhooks,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (webhook,) = webhooks["webhooks"]
    assert webhook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert webhook["clientConfig"]["service"] == {
        "namespace": namespace,
        "name": f"{RELEASE}-webhook",
        "path": "/promotion",
        "port": 443,
    }
    assert (webhook["failurePolicy"], webhook["sideEffects"]) == ("Fail", "None")
    assert "promotedVersion" in webhook["matchConditions"][0]["expression"]
    assert {d["metadata"]["name"] for d in by_kind(docs, "MutatingAdmissionPolicy")} == {
        f"{RELEASE}-promoted-by",
        f"{RELEASE}-published-by",
    }
    assert {d["metadata"]["name"] for d in by_kind(docs, "ValidatingAdmissionPolicy")} == {
        f"{RELEASE}-actors", f"{RELEASE}-version-metadata", f"{RELEASE}-deployment-metadata", f"{RELEASE}-audit-record",
    }  # fmt: skip
    operator_user = f"system:serviceaccount:{namespace}:{RELEASE}"
    metadata_policy = next(
        d for d in by_kind(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("version-metadata")
    )
    assert operator_user in metadata_policy["spec"]["matchConditions"][0]["expression"]
    assert "created (server dry run)" in out and "validatingadmissionpolicy" in out
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 9443, "protocol": "TCP"}]


def test_helm_chart_variants_are_accepted(env: Environment, crds: None, namespace: str) -> None:
    # S3 with credentials the chart turns into a Secret, read by the operator only.
    text = render(
        env, namespace,
        "store.releasesUri=s3://releases/prod", "store.s3.endpoint=https://s3.example.com",
        "store.s3.accessKeyId=AKIAEXAMPLE", "store.s3.secretAccessKey=secret", "retention.days=7",
        "healthGate.timeout=45",
    )  # fmt: skip
    docs = documents(text)
    dry_run(env, text)
    store = next(d for d in by_kind(docs, "Secret") if d["type"] == "Opaque")
    assert set(store["stringData"]) == {"MIOSA_S3_ACCESS_KEY_ID", "MIOSA_S3_SECRET_ACCESS_KEY"}
    variables = container_env(by_kind(docs, "Deployment")[0])
    assert not any("SECRET" in name and not name.startswith("MIOSA_S3_") for name in variables)
    assert variables["MIOSA_S3_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": store["metadata"]["name"], "key": "MIOSA_S3_ACCESS_KEY_ID"}
    }
    assert variables["MIOSA_S3_ENDPOINT"] == "https://s3.example.com"
    assert (variables["MIOSA_RETENTION_DAYS"], variables["MIOSA_HEALTH_GATE_TIMEOUT"]) == ("7", "45")
    assert not by_kind(docs, "PersistentVolumeClaim")

    # A file:// store on an emptyDir (evaluation only); an existing S3 Secret; no webhook; a
    # NetworkPolicy for the artifact port.
    text = render(env, namespace, "store.volume.type=emptyDir", "webhook.enabled=false", "artifacts.networkPolicy.enabled=true")
    docs = documents(text)
    dry_run(env, text)
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert sorted(s["metadata"]["name"] for s in by_kind(docs, "Service")) == [f"{RELEASE}-artifacts", f"{RELEASE}-metrics"]
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "artifacts", "protocol": "TCP"}]
    assert container_env(by_kind(docs, "Deployment")[0])["MIOSA_WEBHOOK"] == "off"
    assert not by_kind(docs, "ValidatingWebhookConfiguration")
    assert [d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")] == [policy["metadata"]["name"]]  # the artifacts one
    assert by_kind(docs, "ValidatingAdmissionPolicy")  # the API server's own rules stay
    text = render(env, namespace, "store.releasesUri=s3://r", "store.s3.existingSecret=mine", "webhook.existingSecret=tls")
    docs = documents(text)
    dry_run(env, text)
    assert not by_kind(docs, "Secret")
    assert container_env(by_kind(docs, "Deployment")[0])["MIOSA_S3_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "mine"
    # The operator puts its CA into the configuration at startup (MIOSA_WEBHOOK_CONFIGURATION).
    assert "caBundle" not in by_kind(docs, "ValidatingWebhookConfiguration")[0]["webhooks"][0]["clientConfig"]

    # Only the API server: its admission client CA, or a NetworkPolicy that keeps pods out.
    text = render(
        env, namespace, "webhook.clientAuth.caConfigMap=apiserver-admission-ca", "webhook.clientAuth.names={kube-apiserver-admission}",
        "webhook.networkPolicy.podCIDRs={10.244.0.0/16}",
    )  # fmt: skip
    docs = documents(text)
    dry_run(env, text)
    variables = container_env(by_kind(docs, "Deployment")[0])
    assert variables["MIOSA_WEBHOOK_CLIENT_CA"] == "/etc/miosa-operator/webhook-client/ca.crt"
    assert variables["MIOSA_WEBHOOK_CLIENT_NAMES"] == "kube-apiserver-admission"
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]

    # Metrics off; JSON logs; the Prometheus Operator's objects (its CRDs are not installed
    # here: rendering only; the rules themselves are checked by promtool in tests/unit).
    docs = documents(render(env, namespace, "metrics.enabled=false", "logFormat=json"))
    assert not any(d["metadata"]["name"].endswith("-metrics") for d in by_kind(docs, "Service"))
    variables = container_env(by_kind(docs, "Deployment")[0])
    assert variables["MIOSA_METRICS_PORT"] == "0" and variables["MIOSA_LOG_FORMAT"] == "json"
    docs = documents(render(env, namespace, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
                            "metrics.serviceMonitor.labels.release=prom"))  # fmt: skip
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom" and monitor["spec"]["endpoints"][0]["port"] == "metrics"
    metrics_service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-metrics"))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    (rule,) = by_kind(docs, "PrometheusRule")
    rules_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == rules_file
    assert helm(env, "template", RELEASE, str(CHART), "--set", "logFormat=xml", check=False).returncode != 0

    # cert-manager is not installed here: check the rendering only.
    docs = documents(render(env, namespace, "webhook.certManager.enabled=true"))
    certificate = next(d for d in by_kind(docs, "Certificate") if d["metadata"]["name"] == f"{RELEASE}-webhook")
    assert certificate["spec"]["dnsNames"][0] == f"{RELEASE}-webhook.{namespace}.svc"
    assert certificate["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    assert len(by_kind(docs, "Issuer")) == 2 and not by_kind(docs, "Secret")
    docs = documents(
        render(
            env,
            namespace,
            "webhook.certManager.enabled=true",
            "webhook.certManager.issuerRef.name=corp",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
        )
    )
    assert not by_kind(docs, "Issuer")
    assert by_kind(docs, "Certificate")[0]["spec"]["issuerRef"] == {"name": "corp", "kind": "ClusterIssuer"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["replicas=2"], "replicas must be 1"),
        (["store.s3.existingSecret=a", "store.s3.accessKeyId=b", "store.s3.secretAccessKey=c"], "not both"),
        (["store.s3.accessKeyId=b"], "must be set together"),
        (["store.releasesUri=http://x"], "store.releasesUri must be"),
        (["store.releasesUri=file:///data"], "under /var/lib/miosa-operator"),
    ],
)
def test_helm_chart_refuses_values_that_cannot_work(env: Environment, values: list[str], message: str) -> None:
    args = ["template", RELEASE, str(CHART)]
    for value in values:
        args += ["--set", value]
    result = helm(env, *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.fixture
def miosa_system(env: Environment, api: client.ApiClient, operator_kubeconfig: Path) -> Iterator[str]:
    """The kustomize base's namespace must exist for a server-side dry run of its contents.
    (The operator's identity lives there for the whole session, so it is normally there.)"""
    core = client.CoreV1Api(api)
    created = False
    try:
        core.create_namespace({"metadata": {"name": "miosa-system", "labels": {"miosa.io/e2e": "true"}}})
        created = True
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield "miosa-system"
    if created:
        core.delete_namespace("miosa-system")


def test_kustomize_base_is_accepted_by_the_api_server(env: Environment, crds: None, miosa_system: str, tmp_path: Path) -> None:
    rendered = env.kubectl("kustomize", str(MANIFESTS)).stdout
    docs = documents(rendered)
    assert {d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")} == {*USER_ROLES, RELEASE}
    namespaced = [d for d in docs if d["kind"] in ("Deployment", "Service", "ServiceAccount", "PersistentVolumeClaim")]
    assert sorted(d["kind"] for d in namespaced) == [
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
        "Service",
        "Service",
        "ServiceAccount",
    ]
    assert {d["metadata"]["namespace"] for d in namespaced} == {miosa_system}
    assert "helm.sh/chart" not in rendered and "app.kubernetes.io/managed-by: Helm" not in rendered
    out = dry_run(env, rendered)
    assert "deployment.apps/miosa-operator created (server dry run)" in out
    # Without a chart there is no CA to template: the operator fills the caBundle in.
    (webhooks,) = by_kind(docs, "ValidatingWebhookConfiguration")
    assert "caBundle" not in webhooks["webhooks"][0]["clientConfig"]
    assert (
        container_env(next(d for d in docs if d["kind"] == "Deployment"))["MIOSA_WEBHOOK_CONFIGURATION"]
        == webhooks["metadata"]["name"]
    )

    # The TLS Secret for kustomize installs comes from hack/webhook-cert.sh ...
    secret_yaml = subprocess.run(
        ["bash", str(REPO / "hack" / "webhook-cert.sh")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    (deployment,) = by_kind(docs, "Deployment")
    (secret,) = documents(secret_yaml)
    assert secret["metadata"]["name"] == deployment["spec"]["template"]["spec"]["volumes"][-1]["secret"]["secretName"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"])))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert container_env(deployment)["MIOSA_WEBHOOK_HOST"] in sans
    dry_run(env, secret_yaml)

    # ... or from cert-manager, through the component.
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(MANIFESTS, overlay)  # kustomize wants relative paths
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "components": [f"{base}/components/cert-manager"]})
    )
    docs = documents(env.kubectl("kustomize", str(overlay)).stdout)
    certificate = next(d for d in by_kind(docs, "Certificate") if not d["spec"].get("isCA"))
    assert certificate["spec"]["secretName"] == secret["metadata"]["name"]
    assert certificate["spec"]["dnsNames"][0] == container_env(deployment)["MIOSA_WEBHOOK_HOST"]


# ----------------------------------------------------------------------------- RBAC


@pytest.fixture(scope="module")
def cluster_roles(
    env: Environment, crds: None, api: client.ApiClient, operator_kubeconfig: Path
) -> Iterator[list[dict[str, Any]]]:
    """The chart's ClusterRoles, applied for real (and nothing else of the chart).

    They stay for the session: the e2e operator runs under the `miosa-operator` one."""
    roles = by_kind(documents(render(env, "miosa-system")), "ClusterRole")
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(roles))
    rbac = client.RbacAuthorizationV1Api(api)

    def aggregated() -> bool:
        def resources(name: str) -> set[str]:
            rules = rbac.read_cluster_role(name).rules or []
            return {r for rule in rules if GROUP in (rule.api_groups or []) for r in rule.resources or []}

        return (
            "deploymentversions" in resources("view")
            and "deploymentversions" in resources("edit")
            and ("retentionpolicies" in resources("admin"))
        )

    wait_until(aggregated, timeout=30, what="aggregation into view/edit/admin")
    return roles


def bind(api: client.ApiClient, namespace: str, role: str) -> str:
    """A new user bound to ClusterRole ``role`` in ``namespace``; returns the user name."""
    user = f"{role}-user-{uuid.uuid4().hex[:6]}"
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    return user


def as_user(user: str) -> client.CustomObjectsApi:
    from miosa_operator.kube.client import load_api_client

    impersonated = load_api_client()
    impersonated.set_default_header("Impersonate-User", user)
    return client.CustomObjectsApi(impersonated)


def status_of(call: Any, *args: Any, **kwargs: Any) -> int:
    """The HTTP status of a call: 200 when it succeeded."""
    try:
        call(*args, **kwargs)
        return 200
    except ApiException as exc:
        return exc.status


def can_list(api: client.CustomObjectsApi, namespace: str, plural: str = "deploymentversions") -> bool:
    return status_of(api.list_namespaced_custom_object, GROUP, VERSION, namespace, plural) == 200


def version_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeploymentVersion", "metadata": {"name": name}, "spec": spec}


def status_writes(custom: client.CustomObjectsApi, namespace: str, deployment: str, version: str) -> list[int]:
    patch = {"status": {"state": "ready"}}
    return [
        status_of(custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, "deploymentversions", version, patch),
        status_of(custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, "deployments", deployment,
                  {"status": {"liveVersion": version}}),
        status_of(custom.replace_namespaced_custom_object_status, GROUP, VERSION, namespace, "deploymentversions", version,
                  {**custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "deploymentversions", version), **patch}),
    ]  # fmt: skip


def test_read_scope_reads_and_nothing_else(cluster_roles: list[dict[str, Any]], api: client.ApiClient, namespace: str) -> None:
    admin = Objects(api, namespace)
    admin.create_deployment("site")
    admin.create_version("site-v1", static_spec("site", "s3://nowhere/site.tar.gz", "0" * 64))
    reader_name = bind(api, namespace, "miosa-deployments-read")
    reader = as_user(reader_name)
    wait_until(lambda: can_list(reader, namespace), timeout=30, what="read binding in effect")

    assert [
        d["metadata"]["name"] for d in reader.list_namespaced_custom_object(GROUP, VERSION, namespace, "deployments")["items"]
    ] == ["site"]
    assert reader.get_namespaced_custom_object(GROUP, VERSION, namespace, "deploymentversions", "site-v1")["spec"][
        "deploymentRef"
    ] == {"name": "site"}
    assert can_list(reader, namespace, "retentionpolicies")
    spec = static_spec("site", "s3://nowhere/site.tar.gz", "1" * 64)
    assert (
        status_of(
            reader.create_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", version_body("site-v2", spec)
        )
        == 403
    )
    assert (
        status_of(
            reader.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "deployments",
            "site",
            {"spec": {"promotedVersion": "site-v1"}},
        )
        == 403
    )
    assert status_of(reader.delete_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", "site-v1") == 403
    assert status_writes(reader, namespace, "site", "site-v1") == [403, 403, 403]
    # Not namespaces it is not bound in.
    assert status_of(reader.list_cluster_custom_object, GROUP, VERSION, "deploymentversions") == 403


def test_write_scope_publishes_and_promotes_but_never_writes_status(
    cluster_roles: list[dict[str, Any]], env: Environment, api: client.ApiClient, namespace: str, s3_prefix: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    writer_name = bind(api, namespace, "miosa-deployments-write")
    writer = as_user(writer_name)
    wait_until(lambda: can_list(writer, namespace), timeout=30, what="write binding in effect")
    objects = Objects(api, namespace)  # the admin, to watch progress
    mine = Objects(writer.api_client, namespace)

    mine.create_deployment("site")
    bundle = tar_gz({"index.html": b"<h1>packaged</h1>"})
    key = f"{s3_prefix}site.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=bundle)
    mine.create_version("site-v1", static_spec("site", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
    assert objects.wait_state("site-v1", "ready", "failed")["status"]["state"] == "ready"

    # Promote = patch spec.promotedVersion; the admission webhooks see the real user.
    promoted = writer.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "deployments", "site", {"spec": {"promotedVersion": "site-v1"}}
    )
    assert promoted["metadata"]["annotations"]["deploy.miosa.io/promoted-by"] == writer_name

    def live() -> dict[str, Any] | None:
        body = objects.deployment("site")
        return body if (body.get("status") or {}).get("liveVersion") == "site-v1" else None

    history = wait_until(live, timeout=90, what="site-v1 live")["status"]["history"]
    assert (history[-1]["action"], history[-1]["actor"]) == ("promote", writer_name)
    # The webhook still refuses what can never be promoted, for this user too; a version that
    # does not exist yet is intent (admitted with a warning, the Deployment waits for it).
    mine.create_version("other-v1", static_spec("other", f"s3://{UPLOADS_BUCKET}/{key}", sha256(bundle)))
    assert status_of(writer.patch_namespaced_custom_object, GROUP, VERSION, namespace, "deployments", "site",
                     {"spec": {"promotedVersion": "other-v1"}}) == 422  # fmt: skip
    assert status_of(writer.patch_namespaced_custom_object, GROUP, VERSION, namespace, "deployments", "site",
                     {"spec": {"promotedVersion": "not-yet"}}) == 200  # fmt: skip
    writer.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "deployments", "site", {"spec": {"promotedVersion": "site-v1"}}
    )

    # Versions are the audit record: patch (server-side apply) reaches only the writer's own
    # labels and annotations, never the ones the operator derives, and there is no delete.
    assert status_of(writer.patch_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", "site-v1",
                     {"metadata": {"labels": {"x": "y"}}}) == 200  # fmt: skip
    assert status_of(writer.patch_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", "site-v1",
                     {"metadata": {"labels": {"deploy.miosa.io/deployment": "other"}}}) == 403  # fmt: skip
    assert status_of(writer.delete_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", "site-v1") == 403
    # Nobody but the operator writes /status: not the write scope, not edit, not admin.
    assert status_writes(writer, namespace, "site", "site-v1") == [403, 403, 403]
    for builtin in ("edit", "admin"):
        user = as_user(bind(api, namespace, builtin))
        wait_until(lambda user=user: can_list(user, namespace), timeout=30, what=f"{builtin} binding in effect")
        assert status_writes(user, namespace, "site", "site-v1") == [403, 403, 403], builtin
    assert objects.version("site-v1")["status"]["state"] == "ready"


def test_builtin_roles_get_the_scopes_by_aggregation(
    cluster_roles: list[dict[str, Any]], api: client.ApiClient, namespace: str
) -> None:
    Objects(api, namespace).create_deployment("site")
    viewer, editor, admin = (as_user(bind(api, namespace, role)) for role in ("view", "edit", "admin"))
    for user in (viewer, editor, admin):
        wait_until(lambda user=user: can_list(user, namespace), timeout=30, what="built-in binding in effect")

    spec = static_spec("site", "s3://nowhere/site.tar.gz", "0" * 64)
    assert (
        status_of(
            viewer.create_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", version_body("v-view", spec)
        )
        == 403
    )
    assert (
        status_of(
            editor.create_namespaced_custom_object, GROUP, VERSION, namespace, "deploymentversions", version_body("v-edit", spec)
        )
        == 200
    )
    assert (
        status_of(
            editor.patch_namespaced_custom_object, GROUP, VERSION, namespace, "deployments", "site", {"spec": {"replicas": 2}}
        )
        == 200
    )
    # Retention decides when artifacts go: namespace admins only.
    policy = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RetentionPolicy",
        "metadata": {"name": "default"},
        "spec": {"retainDays": 60},
    }
    assert status_of(editor.create_namespaced_custom_object, GROUP, VERSION, namespace, "retentionpolicies", policy) == 403
    admin.create_namespaced_custom_object(GROUP, VERSION, namespace, "retentionpolicies", policy)
    assert (
        viewer.get_namespaced_custom_object(GROUP, VERSION, namespace, "retentionpolicies", "default")["spec"]["retainDays"] == 60
    )


def test_operator_role_is_least_privilege(
    cluster_roles: list[dict[str, Any]], env: Environment, api: client.ApiClient, namespace: str
) -> None:
    """The operator's ServiceAccount, bound by the chart's ClusterRoleBinding, may do what the
    operator does and nothing more (SubjectAccessReview, cluster-wide)."""
    (binding,) = by_kind(documents(render(env, namespace)), "ClusterRoleBinding")
    binding["metadata"]["name"] = f"miosa-operator-e2e-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role_binding(binding)
    user = f"system:serviceaccount:{namespace}:{RELEASE}"
    authz = client.AuthorizationV1Api(api)

    def allowed(verb: str, resource: str, group: str = "", ns: str | None = "tenant-a", sub: str = "", name: str = "") -> bool:
        attrs = {"verb": verb, "group": group, "resource": resource, "subresource": sub, "name": name}
        if ns:
            attrs["namespace"] = ns
        review = {"spec": {"user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                           "resourceAttributes": attrs}}  # fmt: skip
        return authz.create_subject_access_review(review).status.allowed

    try:
        wait_until(lambda: allowed("list", "deploymentversions", GROUP, ns=None), timeout=30, what="operator binding in effect")
        needed = [
            ("watch", "deploymentversions", GROUP, None, "", ""),
            ("patch", "deploymentversions", GROUP, "tenant-a", "", ""),
            ("patch", "deploymentversions", GROUP, "tenant-a", "status", ""),
            ("patch", "deployments", GROUP, "tenant-a", "status", ""),
            ("list", "retentionpolicies", GROUP, None, "", ""),
            ("create", "deployments", "apps", "tenant-a", "", ""),
            ("delete", "deployments", "apps", "tenant-a", "", ""),
            ("patch", "services", "", "tenant-a", "", ""),
            # Replace its own objects when they drifted; delete an object that forged its ownership.
            ("update", "deployments", "apps", "tenant-a", "", ""),
            ("update", "services", "", "tenant-a", "", ""),
            ("delete", "services", "", "tenant-a", "", ""),
            ("create", "poddisruptionbudgets", "policy", "tenant-a", "", ""),
            ("delete", "poddisruptionbudgets", "policy", "tenant-a", "", ""),
            ("list", "pods", "", "tenant-a", "", ""),
            ("create", "events", "", "tenant-a", "", ""),
            ("create", "events", "events.k8s.io", "tenant-a", "", ""),
            ("watch", "customresourcedefinitions", "apiextensions.k8s.io", None, "", ""),
            ("watch", "namespaces", "", None, "", ""),
            ("get", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "", RELEASE),
            ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "", RELEASE),
        ]
        refused = [
            ("get", "secrets", "", "tenant-a", "", ""),
            ("create", "pods", "", "tenant-a", "", ""),
            ("delete", "deploymentversions", GROUP, "tenant-a", "", ""),
            ("create", "deploymentversions", GROUP, "tenant-a", "", ""),
            ("update", "deployments", GROUP, "tenant-a", "", ""),
            ("delete", "pods", "", "tenant-a", "", ""),
            ("get", "configmaps", "", "tenant-a", "", ""),
            ("patch", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "", "someone-else"),
            ("create", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "", ""),
            ("delete", "validatingwebhookconfigurations", "admissionregistration.k8s.io", None, "", RELEASE),
            ("patch", "mutatingwebhookconfigurations", "admissionregistration.k8s.io", None, "", GROUP),
            ("patch", "validatingadmissionpolicies", "admissionregistration.k8s.io", None, "", f"{RELEASE}-audit-record"),
            ("purge", "deploymentversions", GROUP, "tenant-a", "", ""),
            ("create", "leases", "coordination.k8s.io", "tenant-a", "", ""),
            ("list", "kopfpeerings", "kopf.dev", None, "", ""),
            ("patch", "retentionpolicies", GROUP, "tenant-a", "", ""),
        ]
        assert [c for c in needed if not allowed(*c)] == []
        assert [c for c in refused if allowed(*c)] == []
    finally:
        rbac.delete_cluster_role_binding(binding["metadata"]["name"])


def test_rendered_manifests_are_up_to_date(env: Environment) -> None:
    """manifests/ is rendered from the chart by the pinned helm; it must not drift."""
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "sync-manifests.sh"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
