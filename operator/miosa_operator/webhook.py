"""The admission webhook's TLS and server settings.

kopf serves the webhook (``kopf.WebhookServer``) and keeps the Validating/Mutating
WebhookConfigurations up to date (``settings.admission.managed``).  The API server only
talks TLS to webhooks, so when no certificate is given (local development, tests) the
operator makes a self-signed one for the webhook's host and address with ``cryptography``;
in a cluster the Helm chart mounts a certificate instead.

Decisions (documented in README.md):
* failurePolicy ``Fail`` for ``deployments`` of our group only: a promotion the operator
  cannot check is refused rather than half-done; nothing else in the cluster depends on
  the operator being up.
* kopf sets ``timeoutSeconds: 30`` (the maximum); the check itself is one GET.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from pathlib import Path

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, registered with the API server by Service reference, not by URL.

    API servers usually cannot resolve cluster DNS names, so ``https://svc.ns.svc`` URLs
    fail there; a ``service`` client config is routed by the API server itself.  kopf
    appends each handler's id to ``service.path``.
    """

    def __init__(self, *, service_namespace: str, service_name: str, service_port: int = 443, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.service = {"namespace": service_namespace, "name": service_name, "port": service_port, "path": "/"}

    async def __call__(self, fn: kopf.WebhookFn):  # type: ignore[override]
        async for config in super().__call__(fn):
            by_service = kopf.WebhookClientConfig(service=dict(self.service))  # type: ignore[typeddict-item]
            if config.get("caBundle"):
                by_service["caBundle"] = config["caBundle"]
            yield by_service


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
