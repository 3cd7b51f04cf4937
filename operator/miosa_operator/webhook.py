"""The admission webhook: who may talk to it, where it looks, and how fast it answers.

kopf serves the webhook (``kopf.WebhookServer`` on aiohttp, in the operator's event loop);
the decision itself is ``domain.admission``.  Design decisions (README: "Admission"):

* **Configurations are installed, not self-managed.**  The chart (``admission-webhook.yaml``;
  ``hack/local-admission.sh`` for the local environment and the e2e suite) installs the
  ValidatingWebhookConfiguration, so it survives operator restarts and upgrades, and it
  carries ``matchConditions``: only writes that change ``spec.promotedVersion`` reach the
  operator, everything else passes while it is down.  kopf's self-managed configurations can
  do neither (they are deleted on a graceful exit and have no matchConditions).  The operator
  only keeps the configuration's ``caBundle`` equal to its CA (``ensure_ca_bundle``) for
  installs whose certificate is made outside the chart (kustomize, an existing Secret).
* **Who promoted is recorded by the API server itself**, not here: a MutatingAdmissionPolicy
  (CEL) restores ``deploy.miosa.io/promoted-by`` on every write of a Deployment unless the
  write changes ``promotedVersion``, and then records the requesting user; it holds while
  the operator is down and cannot be raced by a later annotation write.
* **Admission never waits behind ingestion.**  The handler is async and does its one lookup
  (a GET of the named version) on a thread pool of its own (``PromotionReviewer``) through a
  Kubernetes client of its own with short connect/read timeouts, so a full ingestion pool or
  a hung connection elsewhere cannot delay a promotion or a rollback.  If the lookup fails,
  the answer is a refusal saying the check is unavailable (failurePolicy is ``Fail`` anyway).
* **Only the API server is answered.**  With a client CA configured, the TLS handshake
  requires a client certificate it signed (the API server presents one through its
  AdmissionConfiguration), optionally with one of the configured names; without it the chart
  binds the server to the pod's address and a NetworkPolicy admits only the configured
  sources.  Whatever gets through, a review is answered only from the namespace of the object
  under review (``domain.admission.namespace_mismatch``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import ssl
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .api import meta
from .api.models import VersionKind
from .domain.admission import ALLOWED, Verdict, namespace_mismatch, requested_promotion, review_promotion
from .domain.promotion import VersionView
from .kube.client import ApiError, KubeApi, WebhookConfigurations
from .settings import Settings

log = logging.getLogger(__name__)

PROMOTION_WEBHOOK = "promotion"
"""The handler id, and so the URL path (``/promotion``) the configuration names."""


# ---------------------------------------------------------------------- the decision's I/O


class PromotionReviewer:
    """Answers promotion reviews with one lookup, on threads that nothing else uses."""

    def __init__(self, kube: KubeApi, workers: int) -> None:
        self.kube = kube
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="miosa-admission")

    async def review(self, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> Verdict:
        requested = requested_promotion(body, old)
        if requested is None:
            return ALLOWED
        metadata = body.get("metadata") or {}
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.executor, self.kube.get, meta.VERSION_PLURAL, metadata.get("namespace", ""), requested
            )
        except ApiError as exc:
            log.warning("admission: cannot look up version %r: %s", requested, exc)
            return Verdict(False, "cannot check spec.promotedVersion right now (the Kubernetes API did not answer); retry")
        version = VersionView.from_body(found) if found else None
        kind = VersionKind((body.get("spec") or {}).get("kind", VersionKind.STATIC.value))
        return review_promotion(metadata.get("name", ""), kind, requested, version)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------- the server


def peer_names(peercert: Mapping[str, Any] | None) -> set[str]:
    """Common names and DNS SANs of a verified peer certificate (``ssl.getpeercert()``)."""
    if not peercert:
        return set()
    names = {value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"}
    names |= {value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS"}
    return names


def denial(review: Mapping[str, Any], message: str, code: int = 403) -> dict[str, Any]:
    """An AdmissionReview response refusing the request (answered without any handler)."""
    request = review.get("request") or {}
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": {"uid": request.get("uid", ""), "allowed": False, "status": {"message": message, "code": code}},
    }


def screen(review: Mapping[str, Any], sslpeer: Mapping[str, Any] | None, client_names: tuple[str, ...]) -> str | None:
    """Why a review is refused before any handler sees it, or None."""
    if client_names and not peer_names(sslpeer) & set(client_names):
        return "the webhook answers only the API server (client certificate name not allowed)"
    request = review.get("request") or {}
    return namespace_mismatch(request.get("namespace"), request.get("object"), request.get("oldObject"))


class AdmissionServer(kopf.WebhookServer):
    """kopf's HTTPS server, requiring the API server's client certificate when configured,
    and screening every review (``screen``) before kopf dispatches it to a handler."""

    def __init__(self, *, client_names: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_names = client_names

    async def __call__(self, fn: kopf.WebhookFn):
        async def screened(review: Any, *, sslpeer: Any = None, **kwargs: Any) -> Any:
            refusal = screen(review, sslpeer, self.client_names)
            if refusal:
                log.warning("admission: refused a review: %s", refusal)
                return denial(review, refusal)
            return await fn(review, sslpeer=sslpeer, **kwargs)

        async for config in super().__call__(screened):  # type: ignore[arg-type]
            yield config


def admission_server(config: Settings) -> AdmissionServer:
    host = config.webhook_host or config.webhook_addr
    certfile, keyfile = config.webhook_cert, config.webhook_key
    if not certfile or not keyfile:
        certfile, keyfile = self_signed([host, config.webhook_addr])
    verify: dict[str, Any] = {}
    if config.webhook_client_ca:
        verify = {"verify_mode": ssl.CERT_REQUIRED, "verify_cafile": config.webhook_client_ca}
    return AdmissionServer(
        addr=config.webhook_addr,
        port=config.webhook_port,
        host=host,
        certfile=certfile,
        pkeyfile=keyfile,
        cafile=config.webhook_ca or certfile,
        client_names=config.webhook_client_names,
        **verify,
    )


# ---------------------------------------------------------------------- the configuration's CA


def ensure_ca_bundle(kube: WebhookConfigurations, name: str, ca_pem: bytes) -> bool:
    """Make every webhook of configuration ``name`` trust ``ca_pem``; True if it changed.

    The chart templates the configuration (rules, matchConditions); the operator touches only
    ``caBundle``, and only when it differs, so a GitOps tool's copy and ours agree.
    """
    wanted = base64.b64encode(ca_pem).decode("ascii")
    current = kube.get_webhook_configuration(name)
    if current is None:
        log.warning("admission: ValidatingWebhookConfiguration %r does not exist; promotions are not checked", name)
        return False
    patch = [
        {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}
        for index, webhook in enumerate(current.get("webhooks") or [])
        if (webhook.get("clientConfig") or {}).get("caBundle") != wanted
    ]
    if not patch:
        return False
    kube.patch_webhook_configuration(name, patch, resource_version=current["metadata"]["resourceVersion"])
    log.info("admission: caBundle of %s updated", name)
    return True


# ---------------------------------------------------------------------- certificates


def self_signed(names: list[str], directory: Path | None = None) -> tuple[str, str]:
    """A key and a self-signed certificate valid for ``names`` (DNS names or IPs)."""
    directory = directory or Path(tempfile.mkdtemp(prefix="miosa-webhook-"))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "tls.crt", directory / "tls.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    keyfile.chmod(0o600)
    return str(certfile), str(keyfile)
