#!/usr/bin/env python3
"""Print the chart's admission objects for an operator that runs outside the cluster.

    hack/local-admission.py --url https://127.0.0.1:9443/promotion --ca tls.crt \\
      | kubectl apply --server-side --field-manager=miosa-local-admission -f -

The local environment (hack/dev.sh) and the e2e suite run the operator as a process on
loopback, which the API server reaches by URL, not through a Service.  This takes
manifests/operator/admission-*.yaml (rendered from the chart by hack/sync-manifests.sh, so
the rules, matchConditions and policies are the chart's, byte for byte) and changes only the
webhook's clientConfig: the URL and the CA that signed the operator's serving certificate.
Apply it server-side with one field manager, so re-applying replaces the clientConfig whole.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

import yaml

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests" / "operator"
FILES = ("admission-policies.yaml", "admission-webhook.yaml")


def local_documents(url: str, ca_pem: bytes) -> list[dict]:
    documents = []
    for name in FILES:
        for document in yaml.safe_load_all((MANIFESTS / name).read_text()):
            if not document:
                continue
            if document["kind"] == "ValidatingWebhookConfiguration":
                for webhook in document["webhooks"]:
                    webhook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode("ascii")}
            documents.append(document)
    return documents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, help="where the API server reaches the webhook, e.g. https://127.0.0.1:9443/promotion"
    )
    parser.add_argument(
        "--ca", required=True, type=Path, help="PEM file of the CA (or self-signed certificate) the webhook serves with"
    )
    args = parser.parse_args()
    yaml.safe_dump_all(local_documents(args.url, args.ca.read_bytes()), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
