"""The admission webhook's decisions, and the server that carries them (real TLS on loopback).

Promotion is intent: only what can never succeed is refused; a version that may still
become ready is admitted with a warning.  The webhook answers only clients that present the
API server's client certificate, only from the namespace of the object under review, and
on threads of its own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from miosa_operator.api import meta
from miosa_operator.api.models import VersionKind, VersionState
from miosa_operator.domain.admission import namespace_mismatch, requested_promotion, review_promotion
from miosa_operator.domain.promotion import VersionView
from miosa_operator.kube.client import TransientApiError
from miosa_operator.webhook import AdmissionServer, PromotionReviewer, ensure_ca_bundle, peer_names, screen, self_signed

from .fakes import FakeKube

S = VersionState
NS = "tenant-a"


def view(
    state: S | None, deployment: str = "site", kind: VersionKind = VersionKind.STATIC, collected: bool = False
) -> VersionView:
    return VersionView(name="v", deployment=deployment, kind=kind, state=state, number=1, collected=collected)


# ---------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("state", [S.READY, S.ARCHIVED])
def test_a_promotable_version_is_admitted_without_warnings(state: S) -> None:
    verdict = review_promotion("site", VersionKind.STATIC, "v", view(state))
    assert (verdict.allowed, verdict.warnings) == (True, ())


@pytest.mark.parametrize(
    ("version", "says"),
    [
        (None, "no DeploymentVersion of that name exists"),
        (view(S.CREATED), "is created"),
        (view(S.BUILDING), "is building"),
        (view(None), "not yet numbered"),
    ],
)
def test_a_version_that_may_still_become_ready_is_admitted_with_a_warning(version: VersionView | None, says: str) -> None:
    """A GitOps sync applies the version and its promotion together, in any order."""
    verdict = review_promotion("site", VersionKind.STATIC, "v", version)
    assert verdict.allowed and verdict.message == ""
    (warning,) = verdict.warnings
    assert says in warning and "WaitingForVersion" in warning and "rolls out once the version is ready" in warning


@pytest.mark.parametrize(
    ("version", "says"),
    [
        (view(S.READY, deployment="other"), "belongs to Deployment 'other', not 'site'"),
        (view(S.READY, kind=VersionKind.DYNAMIC), "is a dynamic version; Deployment 'site' is static"),
        (view(S.FAILED), "is failed"),
        (view(S.ARCHIVED, collected=True), "garbage-collected"),
        (view(S.BUILDING, deployment="other"), "belongs to Deployment 'other'"),  # never, whatever its state
    ],
)
def test_what_can_never_succeed_is_refused(version: VersionView, says: str) -> None:
    verdict = review_promotion("site", VersionKind.STATIC, "v", version)
    assert not verdict.allowed and says in verdict.message and verdict.warnings == ()


def body(promoted: str | None, name: str = "site", namespace: str = NS, kind: str = "static") -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": kind}
    if promoted is not None:
        spec["promotedVersion"] = promoted
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_only_a_write_that_sets_or_changes_the_promotion_is_checked() -> None:
    assert requested_promotion(body("v2"), body("v1")) == "v2"
    assert requested_promotion(body("v1"), None) == "v1"  # create
    assert requested_promotion(body("v1"), body("v1")) is None  # labels, replicas, a re-apply
    assert requested_promotion(body(None), body("v1")) is None  # unpromote: nothing to look up
    assert requested_promotion(body(""), None) is None


def test_a_review_is_answered_from_one_namespace_only() -> None:
    assert namespace_mismatch(NS, body("v"), body("v")) is None
    assert namespace_mismatch(NS, {"metadata": {"name": "x"}}, None) is None  # create: namespace from the URL
    assert "not in the namespace" in (namespace_mismatch(NS, body("v", namespace="tenant-b"), None) or "")
    assert "not in the namespace" in (namespace_mismatch(NS, body("v"), body("v", namespace="tenant-b")) or "")
    assert "names no namespace" in (namespace_mismatch(None, body("v"), None) or "")


# ---------------------------------------------------------------------------- the lookup


def version_body(name: str, state: str, deployment: str = "site", namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": meta.API_VERSION,
        "kind": meta.VERSION_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "deploymentRef": {"name": deployment},
            "kind": "static",
            "artifact": {"uri": "s3://u/x.tar", "sha256": "0" * 64},
        },
        "status": {"state": state, "versionNumber": 1},
    }


def reviewer_with(*versions: dict[str, Any]) -> tuple[PromotionReviewer, FakeKube]:
    kube = FakeKube()
    for version in versions:
        kube.objects[(meta.VERSION_PLURAL, version["metadata"]["namespace"], version["metadata"]["name"])] = version
    return PromotionReviewer(kube, workers=2), kube  # type: ignore[arg-type]


def test_the_reviewer_looks_only_in_the_namespace_of_the_deployment() -> None:
    reviewer, kube = reviewer_with(version_body("v1", "ready", namespace="tenant-b"))
    verdict = asyncio.run(reviewer.review(body("v1"), None))
    assert verdict.allowed and "no DeploymentVersion of that name exists" in verdict.warnings[0]
    assert [(c.args["namespace"], c.args["name"]) for c in kube.calls_to("get")] == [(NS, "v1")]


def test_the_reviewer_refuses_a_failed_version_and_skips_unchanged_promotions() -> None:
    reviewer, kube = reviewer_with(version_body("bad", "failed"))
    assert not asyncio.run(reviewer.review(body("bad"), body("good"))).allowed
    assert asyncio.run(reviewer.review(body("bad"), body("bad"))).allowed  # not a promotion: no lookup
    assert len(kube.calls_to("get")) == 1


def test_an_unanswered_lookup_is_a_refusal_that_says_so() -> None:
    reviewer, kube = reviewer_with()
    kube.inject("get", TransientApiError("read timed out"))
    verdict = asyncio.run(reviewer.review(body("v1"), None))
    assert not verdict.allowed and "cannot check spec.promotedVersion right now" in verdict.message


def test_the_reviewer_answers_while_every_other_worker_is_busy() -> None:
    """kopf's pool full of slow ingestions (here: the loop's default executor, blocked) does not
    delay an admission review: it runs on the reviewer's own threads."""
    reviewer, _ = reviewer_with(version_body("v1", "ready"))
    release = threading.Event()

    async def scenario() -> tuple[bool, float, str]:
        loop = asyncio.get_running_loop()
        busy = ThreadPoolExecutor(max_workers=2)
        loop.set_default_executor(busy)
        for _ in range(4):  # more blocked jobs than workers: the pool is full and queued
            loop.run_in_executor(None, release.wait)
        thread_names: list[str] = []
        original = reviewer.kube.get

        def get(*args: Any) -> Any:
            thread_names.append(threading.current_thread().name)
            return original(*args)

        reviewer.kube.get = get  # type: ignore[method-assign]
        started = time.monotonic()
        verdict = await asyncio.wait_for(reviewer.review(body("v1"), None), timeout=5)
        elapsed = time.monotonic() - started
        release.set()
        return verdict.allowed, elapsed, thread_names[0]

    allowed, elapsed, thread = asyncio.run(scenario())
    assert allowed and elapsed < 1.0
    assert thread.startswith("miosa-admission")


# ---------------------------------------------------------------------------- the caBundle


class WebhookConfigurations:
    """The two calls ``ensure_ca_bundle`` makes, against one stored configuration."""

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.config, self.patches = config, []  # type: ignore[var-annotated]

    def get_webhook_configuration(self, name: str) -> dict[str, Any] | None:
        return self.config

    def patch_webhook_configuration(self, name: str, patch: list[dict[str, Any]], resource_version: str | None = None) -> None:
        assert resource_version == "7"
        self.patches.append(patch)


def test_the_operator_touches_only_the_ca_bundle_and_only_when_it_differs() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    encoded = base64.b64encode(ca).decode()
    config = {
        "metadata": {"resourceVersion": "7"},
        "webhooks": [{"clientConfig": {"service": {}}}, {"clientConfig": {"caBundle": encoded}}],
    }
    kube = WebhookConfigurations(config)
    assert ensure_ca_bundle(kube, "miosa-operator", ca) is True  # type: ignore[arg-type]
    assert kube.patches == [[{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded}]]
    config["webhooks"][0]["clientConfig"]["caBundle"] = encoded
    assert ensure_ca_bundle(kube, "miosa-operator", ca) is False  # type: ignore[arg-type]
    assert ensure_ca_bundle(WebhookConfigurations(None), "missing", ca) is False  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- who may ask


def test_peer_names_are_the_common_name_and_dns_names() -> None:
    peer = {
        "subject": ((("commonName", "kube-apiserver-admission"),),),
        "subjectAltName": (("DNS", "apiserver"), ("IP Address", "10.0.0.1")),
    }
    assert peer_names(peer) == {"kube-apiserver-admission", "apiserver"}
    assert peer_names(None) == set()


def review(namespace: str, object_namespace: str, uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "namespace": namespace,
            "operation": "UPDATE",
            "object": body("v2", namespace=object_namespace),
            "oldObject": body("v1", namespace=object_namespace),
        },
    }


def test_screening_checks_the_client_name_then_the_namespace() -> None:
    apiserver = {"subject": ((("commonName", "kube-apiserver-admission"),),)}
    names = ("kube-apiserver-admission",)
    assert screen(review(NS, NS), apiserver, names) is None
    assert screen(review(NS, NS), None, ()) is None  # no names configured: any verified client
    assert "client certificate name" in (screen(review(NS, NS), {"subject": ((("commonName", "mallory"),),)}, names) or "")
    assert "not in the namespace" in (screen(review(NS, "tenant-b"), apiserver, names) or "")


class ClientPKI:
    """A CA standing for the API server's admission client CA, and certificates it signs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-admission-ca")])
        self.cert = self._build(name, name, self.key.public_key(), ca=True)
        self.ca_file = directory / "client-ca.crt"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _build(self, subject: x509.Name, issuer: x509.Name, public_key: Any, ca: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def client(self, common_name: str) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._build(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), self.cert.subject, key.public_key(), ca=False
        )
        certfile, keyfile = self.directory / f"{common_name}.crt", self.directory / f"{common_name}.key"
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return str(certfile), str(keyfile)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, str, ClientPKI, list[dict[str, Any]]]]:
    """An ``AdmissionServer`` requiring client certificates, on loopback, in a thread; the
    reviews that got through to kopf's dispatcher are recorded."""
    pki = ClientPKI(tmp_path)
    (tmp_path / "server").mkdir()
    certfile, keyfile = self_signed(["127.0.0.1"], tmp_path / "server")
    port = free_port()
    dispatched: list[dict[str, Any]] = []

    async def dispatch(review: dict[str, Any], **_: Any) -> dict[str, Any]:
        dispatched.append(review)
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }

    server = AdmissionServer(
        addr="127.0.0.1", port=port, certfile=certfile, pkeyfile=keyfile, verify_mode=ssl.CERT_REQUIRED,
        verify_cafile=str(pki.ca_file), client_names=("kube-apiserver-admission",),
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def run() -> None:
        async for _ in server(dispatch):  # type: ignore[arg-type]
            ready.set()

    task = loop.create_task(run())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert ready.wait(10), "webhook server did not start"
    yield port, certfile, pki, dispatched
    loop.call_soon_threadsafe(task.cancel)
    time.sleep(0.2)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def post(port: int, server_ca: str, payload: dict[str, Any], client: tuple[str, str] | None) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=server_ca)
    if client:
        context.load_cert_chain(*client)
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/promotion", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def test_a_client_without_the_api_servers_certificate_is_refused_during_the_handshake(served: Any, tmp_path: Path) -> None:
    port, server_ca, _pki, dispatched = served
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post(port, server_ca, review(NS, NS), client=None)
    (tmp_path / "stranger").mkdir()
    stranger = ClientPKI(tmp_path / "stranger")  # another CA, the right name
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post(port, server_ca, review(NS, NS), client=stranger.client("kube-apiserver-admission"))
    assert dispatched == []


def test_the_api_servers_certificate_gets_answers_and_foreign_namespaces_get_nothing(served: Any) -> None:
    port, server_ca, pki, dispatched = served
    answer = post(port, server_ca, review(NS, NS, uid="ok"), client=pki.client("kube-apiserver-admission"))
    assert answer["response"] == {"uid": "ok", "allowed": True}
    # Signed by the right CA but not the API server's name: refused, nothing looked up.
    answer = post(port, server_ca, review(NS, NS, uid="name"), client=pki.client("some-pod"))
    assert answer["response"]["allowed"] is False and "client certificate name" in answer["response"]["status"]["message"]
    # An AdmissionReview naming one namespace for an object of another: refused unanswered.
    answer = post(port, server_ca, review(NS, "tenant-b", uid="probe"), client=pki.client("kube-apiserver-admission"))
    assert answer["response"]["uid"] == "probe" and answer["response"]["allowed"] is False
    assert [r["request"]["uid"] for r in dispatched] == ["ok"]
