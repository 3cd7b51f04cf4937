"""What the GitOps and kubectl tests share: a tenant's repository of manifests, as files, and
the ``kubectl`` binary run with that tenant's credentials.

The manifests are the ones docs/gitops.md shows: one Deployment, one file per version (an
append-only, immutable record), bundles uploaded under the tenant's own prefix.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .conftest import UPLOADS_BUCKET, Environment
from .helpers import GROUP, VERSION, sha256, tar_gz
from .slots import CACHE

KUBECTL = CACHE / "bin" / "kubectl"
API_VERSION = f"{GROUP}/{VERSION}"
FLUX_PRUNE_DISABLED = {"kustomize.toolkit.fluxcd.io/prune": "disabled"}
"""On every version manifest: a version dropped from the repository stays (the audit record)."""


def kubectl(
    kubeconfig: Path | str, *args: str, check: bool = True, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The kubectl binary with the given credentials (``KUBECTL_APPLYSET`` etc. through ``env``)."""
    command = [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args]
    done = subprocess.run(command, capture_output=True, text=True, input=input, timeout=180, env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def deployment_manifest(name: str, promoted: str | None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "static", **spec}
    if promoted:
        body["promotedVersion"] = promoted
    return {"apiVersion": API_VERSION, "kind": "Deployment", "metadata": {"name": name}, "spec": body}


def version_manifest(
    name: str, deployment: str, uri: str, digest: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": "DeploymentVersion",
        "metadata": metadata,
        "spec": {"deploymentRef": {"name": deployment}, "kind": "static", "artifact": {"uri": uri, "sha256": digest}},
    }


def documents(*objects: dict[str, Any]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


@dataclass
class Bundle:
    uri: str
    sha256: str


def upload_bundle(env: Environment, namespace: str, name: str, *, corrupt: bool = False) -> Bundle:
    """A site bundle under the tenant's upload prefix; ``corrupt``: its sha256 will not match."""
    data = tar_gz({"index.html": f"<h1>{name}</h1>".encode()})
    key = f"{namespace}/{name}.tar.gz"
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=data)
    return Bundle(f"s3://{UPLOADS_BUCKET}/{key}", "0" * 64 if corrupt else sha256(data))


class Repository:
    """A tenant's GitOps repository as a directory: ``deployments/`` and ``versions/``."""

    def __init__(self, root: Path, env: Environment, namespace: str, version_annotations: dict[str, str] | None = None):
        self.root, self.env, self.namespace = root, env, namespace
        self.version_annotations = version_annotations
        (root / "deployments").mkdir(parents=True, exist_ok=True)
        (root / "versions").mkdir(parents=True, exist_ok=True)

    def add_version(self, name: str, deployment: str, *, corrupt: bool = False) -> Path:
        bundle = upload_bundle(self.env, self.namespace, name, corrupt=corrupt)
        path = self.root / "versions" / f"{name}.yaml"
        path.write_text(documents(version_manifest(name, deployment, bundle.uri, bundle.sha256, self.version_annotations)))
        return path

    def set_deployment(self, name: str, promoted: str | None, **spec: Any) -> Path:
        path = self.root / "deployments" / f"{name}.yaml"
        path.write_text(documents(deployment_manifest(name, promoted, **spec)))
        return path

    def remove(self, relative: str) -> None:
        (self.root / relative).unlink()

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*.yaml"))}
