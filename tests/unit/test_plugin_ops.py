"""The plugin on day two: status/--watch, retry, -o on every command, jsonpath, completion,
kubeconfig handling, the stdlib HTTPS client, and what `versions list` imports."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from miosa_operator.api import meta
from miosa_operator.api.models import PromotionPolicy, VersionState
from miosa_operator.domain import states
from miosa_operator.plugin import commands, completion, jsonpath, kubeconfig, selection
from miosa_operator.plugin.apiclient import ApiClient, ApiStatus
from miosa_operator.plugin.cli import build_parser
from miosa_operator.plugin.errors import ExitCode, PluginError

from .test_plugin import NS, FakeCustomObjects, fake_cluster, run

Obj = dict[str, Any]


@pytest.fixture(name="fake")
def fake_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeCustomObjects:
    return fake_cluster(monkeypatch)


def condition(type_: str, status: str, reason: str = "", message: str = "", generation: int = 4) -> Obj:
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": generation}


def healthy(fake: FakeCustomObjects) -> Obj:
    body = fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]
    body["metadata"]["resourceVersion"] = "100"
    body["status"].update(
        observedGeneration=4, liveVersionNumber=3,
        conditions=[condition("Ready", "True", "Live", "version v3 (#3) is live"), condition("Reconciling", "False", "Live"),
                    condition("Stalled", "False", "Live")],
    )  # fmt: skip
    return body


def reverted(body: Obj) -> Obj:
    out = json.loads(json.dumps(body))
    out["metadata"]["resourceVersion"] = "102"
    out["status"].update(
        revertedVersions=["v4"],
        conditions=[condition("Ready", "False", "RolloutReverted", "the rollout of v4 failed and was reverted; v3 stays live"),
                    condition("Reconciling", "False", "RolloutReverted"), condition("Stalled", "True", "RolloutReverted",
                    "the rollout of v4 failed and was reverted; v3 stays live")],
    )  # fmt: skip
    return out


def rolling(body: Obj) -> Obj:
    out = json.loads(json.dumps(body))
    out["metadata"]["resourceVersion"] = "101"
    out["status"]["rollout"] = {"version": "v4", "versionNumber": 4, "action": "promote", "startedAt": "2026-05-14T12:00:00Z"}
    out["status"]["conditions"] = [condition("Ready", "False", "RollingOut", "promote: rolling out v4 (#4)"),
                                   condition("Reconciling", "True", "RollingOut"), condition("Stalled", "False", "RollingOut")]  # fmt: skip
    return out


# ---------------------------------------------------------------------------- status


def test_status_exit_codes_follow_kstatus(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    body = healthy(fake)
    code, out, _ = run(capsys, "status", "site")
    assert code == 0 and "Status:      Healthy  Live: version v3 (#3) is live" in out and "Live:        v3 (#3)" in out
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")] = rolling(body)
    code, out, _ = run(capsys, "status", "site")
    assert code == ExitCode.IN_PROGRESS and "Rollout:     promote v4 (#4)" in out
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")] = reverted(body)
    code, out, err = run(capsys, "status", "site", "-o", "jsonpath={.status.revertedVersions[0]}")
    assert code == 1 and out == "v4" and err == ""
    code, out, err = run(capsys, "status", "site")
    assert code == 1 and "is Degraded: RolloutReverted" in err
    # A spec the operator has not acted on yet is in progress, whatever the old conditions say.
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")] = healthy(fake) | {"metadata": {"name": "site", "generation": 5}}
    assert run(capsys, "status", "site", "-o", "name") == (6, "deployment.deploy.miosa.io/site\n", "")


def test_status_watch_streams_changes_and_exits_1_on_a_revert(
    fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]
) -> None:
    body = rolling(healthy(fake))
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")] = body
    streams = [[{"type": "MODIFIED", "object": rolling(body) | {"metadata": {**body["metadata"], "resourceVersion": "105"}}}],
               [{"type": "MODIFIED", "object": reverted(body)}]]  # fmt: skip
    seen: list[tuple[str, dict[str, str]]] = []

    def watch(path: str, query: dict[str, str], timeout: float) -> Iterator[Obj]:
        seen.append((path, query))
        yield from streams.pop(0)

    fake.watch = watch  # type: ignore[attr-defined]
    code, out, err = run(capsys, "status", "site", "--watch", "--timeout", "30")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 2  # the unchanged MODIFIED is not printed again
    assert "Progressing  RollingOut: promote: rolling out v4 (#4)  (live: v3 (#3)) [rolling out promote v4 (#4)]" in lines[0]
    assert "Degraded     RolloutReverted: the rollout of v4 failed" in lines[1]
    assert seen[0][1]["fieldSelector"] == "metadata.name=site" and seen[0][1]["resourceVersion"] == "101"
    assert len(seen) == 2  # the stream ended: read again, watched again
    assert "Degraded" in err


def test_status_watch_times_out_with_exit_6(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")] = rolling(healthy(fake))
    fake.watch = lambda *a: iter(())  # type: ignore[attr-defined]
    code, _, err = run(capsys, "status", "site", "--watch", "--timeout", "0.2")
    assert code == 6 and "timed out after 0.2s: deployment site is still progressing (RollingOut" in err


# ---------------------------------------------------------------------------- retry


def test_retry_annotates_without_touching_spec(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    fake.objects[(meta.DEPLOYMENT_PLURAL, "site")] = reverted(healthy(fake))
    fake.objects[(meta.VERSION_PLURAL, "v4")] = {**fake.objects[(meta.VERSION_PLURAL, "v3")], "metadata": {"name": "v4"}}
    spec_before = dict(fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["spec"])
    code, out, _ = run(capsys, "retry", "v4", "--reason", "quota raised")
    assert code == 0 and out == "retry of v4 on deployment site requested\n"
    _, (name, patch) = fake.calls[-1]
    assert name == "site" and set(patch) == {"metadata"}
    annotations = patch["metadata"]["annotations"]
    assert annotations[meta.ANNOTATION_CHANGE_CAUSE] == "quota raised"
    version, _, when = annotations[meta.ANNOTATION_RETRY].partition("@")
    assert version == "v4" and dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    assert fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]["spec"] == spec_before


def test_retry_refuses_what_was_not_reverted(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    healthy(fake)
    code, _, err = run(capsys, "retry", "v3")
    assert code == 1 and "v3 has no reverted rollout to retry on deployment site (v3 is live)" in err
    failed = fake.objects[(meta.DEPLOYMENT_PLURAL, "site")]
    failed["status"]["conditions"] = [condition("Stalled", "True", "VersionFailed", "v4 failed its health check")]
    code, _, err = run(capsys, "retry", "v2")
    assert code == 1 and "is Stalled (VersionFailed: v4 failed its health check)" in err
    assert all(call != "patch" for call, _ in fake.calls)


def test_retry_outcome() -> None:
    token = "v4@2026-05-14T12:00:00.000000Z"
    status = {"lastRetryToken": "older", "revertedVersions": ["v4"]}
    assert commands.retry_outcome({"status": status}, "v4", token) is None  # not acted on yet
    assert commands.retry_outcome({"status": {"lastRetryToken": token, "rollout": {"version": "v4"}}}, "v4", token) is None
    assert commands.retry_outcome({"status": {"lastRetryToken": token, "liveVersion": "v4"}}, "v4", token).done  # type: ignore[union-attr]
    again = {
        "lastRetryToken": token,
        "revertedVersions": ["v4"],
        "conditions": [condition("Stalled", "True", "RolloutReverted", "again")],
    }
    assert commands.retry_outcome({"status": again}, "v4", token) == commands.Outcome(False, "RolloutReverted: again")


# ---------------------------------------------------------------------------- -o everywhere


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["versions", "list", "site", "-o", "name"],
            "deploymentversion.deploy.miosa.io/v3\ndeploymentversion.deploy.miosa.io/v2\ndeploymentversion.deploy.miosa.io/v1\n",
        ),
        (
            ["versions", "list", "site", "-o", 'jsonpath={range [*]}{.name}={.state}{"\\n"}{end}'],
            "v3=ready\nv2=archived\nv1=archived\n",
        ),
        (["versions", "show", "v2", "-o", "jsonpath={.version_number}"], "2"),
        (["versions", "show", "v2", "-o", "name"], "deploymentversion.deploy.miosa.io/v2\n"),
        (["history", "site", "-o", "jsonpath={[0].version}"], "v3"),
        (
            ["history", "site", "-o", "name"],
            "deploymentversion.deploy.miosa.io/v3\ndeploymentversion.deploy.miosa.io/v2\ndeploymentversion.deploy.miosa.io/v1\n",
        ),
        (["promote", "site", "v2", "-o", "name"], "deployment.deploy.miosa.io/site\n"),
        (["promote", "site", "v2", "-o", "jsonpath={.spec.promotedVersion}"], "v2"),
        (["rollback", "site", "-o", "jsonpath='{.spec.promotedVersion}'"], "v2"),
        (["logs", "v3", "-o", "name"], "deploymentversion.deploy.miosa.io/v3\n"),
    ],
)
def test_every_command_takes_o(
    fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (0, expected), err


def test_o_yaml_of_a_promotion_is_the_deployment(fake: FakeCustomObjects, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "promote", "site", "v1", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["spec"]["promotedVersion"] == "v1"


def test_bad_output_formats_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("xml", "jsonpath={range .x}", "jsonpath={.a[bad]}"):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(["versions", "list", "site", "-o", bad])
        assert caught.value.code == 2
    assert "unsupported output format 'xml'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- jsonpath


DOC = {"kind": "Deployment", "metadata": {"name": "site", "labels": {"a/b": "c"}},
       "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Live"}, {"type": "Stalled", "status": "False"}],
                  "history": [{"version": "v1", "n": 1}, {"version": "v2", "n": 2}, {"version": "v3", "n": 3}]}}  # fmt: skip


@pytest.mark.parametrize(
    ("template", "printed"),
    [
        ("{.metadata.name}", "site"),
        ('{.status.conditions[?(@.type=="Ready")].reason}', "Live"),
        ("{.status.conditions[?(@.type=='Stalled')].status}", "False"),
        ("{.status.conditions[?(@.reason)].type}", "Ready"),
        ("{.status.history[*].version}", "v1 v2 v3"),
        ("{.status.history[-1].version}", "v3"),
        ("{.status.history[0:2].n}", "1 2"),
        ("{.status.history[?(@.n>=2)].version}", "v2 v3"),
        ('{range .status.history[*]}{.version}:{.n}{"\\n"}{end}', "v1:1\nv2:2\nv3:3\n"),
        ("{..reason}", "Live"),
        ("{.metadata.labels['a/b']}", "c"),
        ("{.status.history[1]}", '{"version":"v2","n":2}'),
        ("kind={.kind} missing={.nothing.here}", "kind=Deployment missing="),
        ("{$.metadata.name}/{@.kind}", "site/Deployment"),
    ],
)
def test_jsonpath_prints_like_kubectl(template: str, printed: str) -> None:
    assert jsonpath.render(template, DOC) == printed


def test_jsonpath_errors() -> None:
    for bad in ("{range .a}", "{end}", "{.a", "{.a[x]}", '{"unterminated}'):
        with pytest.raises(jsonpath.JsonPathError):
            jsonpath.render(bad, DOC)


# ---------------------------------------------------------------------------- completion


def complete(*words: str) -> list[str]:
    *before, partial = words
    found, directive = completion.candidates(build_parser(), before, partial)
    return [*found, f":{directive}"]


def test_completion_of_commands_flags_and_choices() -> None:
    assert complete("") == ["history", "logs", "promote", "publish", "retry", "rollback", "status", "versions", ":4"]
    assert complete("ro") == ["rollback", ":4"]
    assert complete("versions", "") == ["list", "show", ":4"]
    assert complete("versions", "list", "site", "--st") == ["--state", ":4"]
    assert complete("versions", "list", "site", "--state", "") == [*selection.STATES, ":4"]
    assert complete("status", "site", "-o", "j") == ["json", "jsonpath=", ":4"]
    assert complete("status", "site", "--w") == ["--watch", ":4"]
    assert complete("--kubeconfig", "") == [":0"]  # file names: the shell completes them


def test_completion_of_names_from_the_cluster(fake: FakeCustomObjects) -> None:
    assert complete("promote", "") == ["site", ":4"]
    assert complete("promote", "site", "v") == ["v1", "v2", "v3", ":4"]
    assert complete("-n", NS, "versions", "show", "v2") == ["v2", ":4"]
    assert complete("logs", "v1", "") == [":4"]


def test_completion_never_fails_the_shell(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert completion.main(["promote", ""]) == 0
    assert capsys.readouterr().out == ":4\n"


def test_completion_executable_is_installed() -> None:
    exe = Path(sys.executable).parent / "kubectl_complete-miosa"
    done = subprocess.run([str(exe), "versions", ""], capture_output=True, text=True, timeout=60)
    assert done.stdout == "list\nshow\n:4\n"


# ---------------------------------------------------------------------------- constants and imports


def test_plugin_constants_match_the_models() -> None:
    assert tuple(s.value for s in VersionState) == selection.STATES
    assert {s.value for s in states.PROMOTABLE} == selection.PROMOTABLE
    assert (PromotionPolicy.MANUAL.value, PromotionPolicy.AUTO.value) == (commands.MANUAL, commands.AUTO)


def test_the_plugin_imports_neither_kopf_boto3_pydantic_nor_the_kubernetes_client() -> None:
    code = (
        "import sys; import miosa_operator.plugin.cli, miosa_operator.plugin.completion; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.replace("'", '"')
    )
    assert not {"kopf", "boto3", "botocore", "pydantic", "pydantic_settings", "kubernetes", "urllib3"} & set(loaded)


# ---------------------------------------------------------------------------- kubeconfig


def write_config(path: Path, **doc: Any) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **doc}))
    return path


def test_kubeconfig_lists_merge_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "certs").mkdir()
    first = write_config(
        tmp_path / "a", **{"current-context": "one",
                           "contexts": [{"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "tenant"}}],
                           "clusters": [{"name": "c", "cluster": {"server": "https://first:6443", "certificate-authority": "certs/ca.crt"}}]},
    )  # fmt: skip
    second = write_config(
        tmp_path / "b", **{"current-context": "ignored",
                           "clusters": [{"name": "c", "cluster": {"server": "https://second:6443"}}],
                           "users": [{"name": "u", "user": {"token": "secret-token"}}]},
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'missing'}:{second}")
    endpoint = kubeconfig.load()
    assert (endpoint.server, endpoint.namespace, endpoint.token) == ("https://first:6443", "tenant", "secret-token")
    assert endpoint.ca_file == str(tmp_path / "certs" / "ca.crt")  # relative to the file that names it
    assert "secret-token" not in repr(endpoint)
    assert kubeconfig.contexts(None) == ["one"]
    with pytest.raises(kubeconfig.KubeconfigError, match="context 'nope' not found"):
        kubeconfig.load(context="nope")


def test_kubeconfig_refusals(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c", **{"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                           "clusters": [{"name": "c", "cluster": {"server": "https://k:6443"}}],
                           "users": [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}]},
    )  # fmt: skip
    with pytest.raises(kubeconfig.KubeconfigError, match=r"auth-provider 'gcp', which kubectl removed in 1\.26"):
        kubeconfig.load(str(cfg))
    with pytest.raises(kubeconfig.KubeconfigError, match="no kubeconfig found"):
        kubeconfig.load(str(tmp_path / "none"))
    (tmp_path / "bad").write_text("clusters: [")
    with pytest.raises(kubeconfig.KubeconfigError, match="not valid YAML"):
        kubeconfig.load(str(tmp_path / "bad"))


# ---------------------------------------------------------------------------- the HTTPS client, for real


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)

    def issue(name: str, issuer: Any, issuer_key: Any, ca: bool, usage: Any, sans: list[x509.GeneralName]) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return cert, key

    import ipaddress

    ca, ca_key = issue("test-ca", None, None, True, None, [])
    server, server_key = issue("apiserver", ca.subject, ca_key, False, ExtendedKeyUsageOID.SERVER_AUTH,
                               [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("kubernetes.internal")])  # fmt: skip
    user, user_key = issue("alice", ca.subject, ca_key, False, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = {}
    for name, cert, key in (("ca", ca, ca_key), ("server", server, server_key), ("user", user, user_key)):
        files[f"{name}.crt"] = directory / f"{name}.crt"
        files[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.key"] = directory / f"{name}.key"
        files[f"{name}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))  # fmt: skip
    return files


@pytest.fixture
def apiserver(pki: dict[str, Path]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTPS server that wants a client certificate or a token, and records requests."""
    import ssl

    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            peer = self.connection.getpeercert()  # type: ignore[attr-defined]
            user = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "cert": user})
            if not user and self.headers.get("Authorization") != "Bearer good-token":
                self._answer(401, {"kind": "Status", "message": "Unauthorized"})
                return
            if "watch=1" in self.path:
                data = b"".join(json.dumps({"type": "MODIFIED", "object": {"n": i}}).encode() + b"\n" for i in range(2))
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self._answer(200, {"items": [{"metadata": {"name": "x"}}]})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.crt"]))
    context.load_cert_chain(str(pki["server.crt"]), str(pki["server.key"]))
    context.verify_mode = ssl.CERT_OPTIONAL
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_client_certificate_from_data_and_the_clusters_ca(apiserver: tuple[str, list[Any]], pki: dict[str, Path]) -> None:
    url, seen = apiserver
    endpoint = kubeconfig.Endpoint(
        server=url,
        ca_data=pki["ca.crt"].read_bytes(),
        cert_data=pki["user.crt"].read_bytes(),
        key_data=pki["user.key"].read_bytes(),
    )
    assert ApiClient(endpoint).request("GET", "/apis/x")["items"][0]["metadata"]["name"] == "x"
    assert seen[-1] == {"path": "/apis/x", "auth": None, "cert": "alice"}
    events = list(ApiClient(endpoint).watch("/apis/x", {"fieldSelector": "metadata.name=a"}, 5))
    assert [e["object"]["n"] for e in events] == [0, 1] and "timeoutSeconds=5" in seen[-1]["path"]


def test_token_file_tls_server_name_and_failures(apiserver: tuple[str, list[Any]], pki: dict[str, Path], tmp_path: Path) -> None:
    import ssl

    url, seen = apiserver
    token = tmp_path / "token"
    token.write_text("good-token\n")
    named = kubeconfig.Endpoint(server=url.replace("127.0.0.1", "localhost"), ca_file=str(pki["ca.crt"]),
                                tls_server_name="kubernetes.internal", token_file=str(token))  # fmt: skip
    ApiClient(named).request("GET", "/apis/y", query={"labelSelector": "a=b"})
    assert seen[-1]["auth"] == "Bearer good-token" and seen[-1]["path"] == "/apis/y?labelSelector=a%3Db"
    with pytest.raises(ApiStatus) as caught:
        ApiClient(kubeconfig.Endpoint(server=url, ca_file=str(pki["ca.crt"]), token="bad")).request("GET", "/apis/z")
    assert caught.value.status == 401 and "Unauthorized" in caught.value.body
    with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not know the test CA
        ApiClient(kubeconfig.Endpoint(server=url, token="good-token")).request("GET", "/apis/z")
    insecure = kubeconfig.Endpoint(server=url, insecure=True, token="good-token")
    assert ApiClient(insecure).request("GET", "/apis/z")["items"]


def test_exec_credential_plugin(apiserver: tuple[str, list[Any]], pki: dict[str, Path], tmp_path: Path) -> None:
    url, seen = apiserver
    helper = tmp_path / "bin" / "get-token"
    helper.parent.mkdir()
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {"token": "good-token"}}
    helper.write_text(f"#!/bin/sh\ntest -n \"$KUBERNETES_EXEC_INFO\" || exit 3\necho '{json.dumps(credential)}'\n")
    helper.chmod(0o755)
    cfg = write_config(
        tmp_path / "config", **{"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                                "clusters": [{"name": "c", "cluster": {"server": url,
                                              "certificate-authority-data": base64.b64encode(pki["ca.crt"].read_bytes()).decode()}}],
                                "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                                          "command": "bin/get-token"}}}]},
    )  # fmt: skip
    client = ApiClient(kubeconfig.load(str(cfg)))
    client.request("GET", "/apis/a")
    client.request("GET", "/apis/b")
    assert [s["auth"] for s in seen[-2:]] == ["Bearer good-token"] * 2
    helper.write_text("#!/bin/sh\necho denied >&2\nexit 1\n")
    with pytest.raises(kubeconfig.KubeconfigError, match=r"exec credential plugin .* failed: denied"):
        ApiClient(kubeconfig.load(str(cfg))).request("GET", "/apis/c")


def test_unreachable_server_is_exit_5(fake: FakeCustomObjects) -> None:
    from miosa_operator.plugin.client import Cluster

    cluster = Cluster(ApiClient(kubeconfig.Endpoint(server="https://127.0.0.1:1"), timeout=2), NS)
    with pytest.raises(PluginError) as caught:
        cluster.get_deployment("site")
    assert caught.value.code == ExitCode.UNREACHABLE and "connection refused" in str(caught.value)
