"""End-to-end fixtures: the real local control plane, the real S3 server, the operator.

The session starts an environment of its own with ``hack/env.sh up`` and stops it at the
end: its own state directory (``~/.cache/miosa-operator/test-env``) and ports, never the
ones ``make dev`` uses, so the README's two commands can run one after the other (or side by
side) and no test object is ever seen by the dev environment's operator.  With
``MIOSA_E2E_REUSE=1`` an environment that is already running in that directory
(``make test-env``; ``slots.py`` has the directory and ports) is used as is and left running, which makes the edit-test loop fast.  Every test gets a namespace of its own
(the tenant) and an S3 prefix of its own for the bundles it uploads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from envfile import read_env_file  # tests/envfile.py, shared with the benchmarks

from .slots import ARTIFACTS_PORT, CACHE, ENV_DIR, METRICS_PORT, WEBHOOK_PORT, environment_variables

REPO = Path(__file__).resolve().parents[2]
ENV_SCRIPT = REPO / "hack" / "env.sh"
RELEASES_BUCKET = "miosa-releases"
UPLOADS_BUCKET = "miosa-uploads"


def _env_script(command: str, timeout: float, *flags: str) -> None:
    subprocess.run(
        ["bash", str(ENV_SCRIPT), command, *flags],
        check=command == "up",
        timeout=timeout,
        env={**os.environ, **environment_variables()},
    )


@dataclass
class Environment:
    values: dict[str, str]
    bin_dir: Path = CACHE / "bin"

    @property
    def kubeconfig(self) -> str:
        return self.values["KUBECONFIG"]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", self.kubeconfig, *args]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input, timeout=120)

    def s3(self) -> Any:
        from miosa_operator.settings import Settings

        return Settings.from_env(self.values).s3_config.make_client()


@pytest.fixture(scope="session")
def env(request: pytest.FixtureRequest) -> Iterator[Environment]:
    reuse = os.environ.get("MIOSA_E2E_REUSE") == "1"
    if not reuse:
        # The real node (kubelet + containerd) only when a collected test runs pods on it.
        real_node = any(item.get_closest_marker("realnode") for item in request.session.items)
        _env_script("up", 3600, *(["--real-node"] if real_node else []))
    environment = Environment(read_env_file(ENV_DIR / "env"))
    saved = {k: os.environ.get(k) for k in environment.values}
    os.environ.update(environment.values)
    try:
        yield environment
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not reuse:
            _env_script("down", timeout=120)


@pytest.fixture(scope="session")
def api(env: Environment) -> client.ApiClient:
    from miosa_operator.kube.client import load_api_client

    return load_api_client()


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


def create_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"miosa.io/e2e": "true", **(labels or {})}}})
    # Pods need the namespace's default ServiceAccount, which the controller-manager creates.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items):
            break
        time.sleep(0.2)


def _slug(request: pytest.FixtureRequest, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:limit].rstrip("-")


@pytest.fixture
def namespace(env: Environment, api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A tenant namespace under Pod Security "restricted": every pod the operator creates
    must be admitted there (issue 10: the whole suite runs its tenants under it)."""
    name = f"e2e-{_slug(request)}-{uuid.uuid4().hex[:5]}"
    create_namespace(api, name, RESTRICTED)
    yield name
    client.CoreV1Api(api).delete_namespace(name)


# ---------------------------------------------------------------------------- tenants


@dataclass
class Tenant:
    """A tenant as the product sees one: a namespace under Pod Security "restricted", driven
    through a real ServiceAccount token (``ci``) bound only to ``miosa-deployments-write``."""

    namespace: str
    kubeconfig: Path
    api: client.ApiClient
    """Authenticated as the tenant's ``ci`` ServiceAccount: only what the write role grants."""


@pytest.fixture
def tenants(
    env: Environment, api: client.ApiClient, operator_kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Tenant]]:
    """``tenants("a")`` makes tenant ``a`` of this test (each call a new namespace);
    ``role=`` binds another ClusterRole (e.g. ``edit`` for an attacker with more rights)."""
    from kubernetes import config as kube_config

    created: list[str] = []

    def make(label: str, role: str = "miosa-deployments-write", labels: dict[str, str] | None = None) -> Tenant:
        name = f"e2e-{_slug(request, 30)}-{label}-{uuid.uuid4().hex[:4]}"
        create_namespace(api, name, {**RESTRICTED, **(labels or {})})
        created.append(name)
        env.kubectl("-n", name, "create", "serviceaccount", "ci")
        env.kubectl("-n", name, "create", "rolebinding", "ci", f"--clusterrole={role}", f"--serviceaccount={name}:ci")
        kubeconfig = service_account_kubeconfig(env, name, "ci", tmp_path)
        return Tenant(name, kubeconfig, kube_config.new_client_from_config(config_file=str(kubeconfig)))

    yield make
    for name in created:
        try:
            client.CoreV1Api(api).delete_namespace(name)
        except client.exceptions.ApiException as exc:
            if exc.status != 404:  # a test may delete its tenant itself (offboarding)
                raise


@pytest.fixture
def s3_prefix(namespace: str) -> str:
    """Where this test uploads its bundles: its own prefix in the uploads bucket."""
    return f"{namespace}/"


# ---------------------------------------------------------------------------- the operator

OPERATOR_ENV = {
    "MIOSA_RELEASES_URI": f"s3://{RELEASES_BUCKET}",
    "MIOSA_HEALTH_GATE_TIMEOUT": "20",
    "MIOSA_POLL_INTERVAL": "1",
    "MIOSA_WEBHOOK_ADDR": "127.0.0.1",
    "MIOSA_WEBHOOK_PORT": str(WEBHOOK_PORT),
    "MIOSA_ARTIFACTS_ADDR": "127.0.0.1",
    "MIOSA_ARTIFACTS_PORT": str(ARTIFACTS_PORT),
    "MIOSA_METRICS_PORT": str(METRICS_PORT),
    # JSON lines for the whole session: tests/e2e/test_observability.py parses every line.
    "MIOSA_LOG_FORMAT": "json",
}
WEBHOOK_URL = f"https://127.0.0.1:{WEBHOOK_PORT}/promotion"


@dataclass
class OperatorProcess:
    """The real operator (``miosa-operator run``) as a child process, killable and restartable."""

    env: Environment
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)  # e.g. ["-n", namespace]

    def start(self) -> None:
        exe = Path(sys.executable).parent / "miosa-operator"
        command = (
            [str(exe), "run", "--standalone"] if exe.exists() else [sys.executable, "-m", "miosa_operator", "run", "--standalone"]
        )
        command += self.extra_args
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the operator process writes it until stopped
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **self.env.values, **OPERATOR_ENV, **self.extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a node dying under the operator."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the admission webhook and the metrics endpoint answer: a Deployment created
        before the webhook listens is refused (failurePolicy Fail, registered by a previous run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                for port in (WEBHOOK_PORT, METRICS_PORT):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the operator did not listen within {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def crds(env: Environment) -> None:
    env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    env.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


@pytest.fixture(scope="session")
def operator_kubeconfig(env: Environment, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig for the operator's own ServiceAccount with the packaged least-privilege
    ClusterRole (manifests/operator), so the whole suite proves those permissions suffice."""
    operator_dir = REPO / "manifests" / "operator"
    env.kubectl("create", "namespace", "miosa-system", check=False)
    for manifest in ("serviceaccount.yaml", "rbac.yaml"):
        env.kubectl("apply", "-f", str(operator_dir / manifest))
    return service_account_kubeconfig(env, "miosa-system", "miosa-operator", tmp_path_factory.mktemp("operator-identity"))


def service_account_kubeconfig(env: Environment, namespace: str, account: str, directory: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account`` (a bound token)."""
    token = env.kubectl("-n", namespace, "create", "token", account, "--duration=6h").stdout.strip()
    config = directory / f"{namespace}-{account}.kubeconfig"
    ca = Path(env.kubeconfig).parent / "pki" / "ca.crt"
    server = re.search(r"server: (\S+)", Path(env.kubeconfig).read_text())
    assert server, "no server in the environment's kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: local, cluster: {{server: '{server.group(1)}', certificate-authority: '{ca}'}}}}]\n"
        f"users: [{{name: {account}, user: {{token: '{token}'}}}}]\n"
        f"contexts: [{{name: {account}, context: {{cluster: local, user: {account}, namespace: {namespace}}}}}]\n"
        f"current-context: {account}\n"
    )
    return config


@dataclass(frozen=True)
class Admission:
    """The chart's admission objects, installed for the operator on loopback, and the files
    the operator serves and verifies with."""

    cert: Path
    key: Path
    client_ca: Path
    """The CA of the client certificate the API server presents to webhooks (hack/env.sh)."""
    client_cert: Path
    client_key: Path

    @property
    def operator_env(self) -> dict[str, str]:
        return {
            "MIOSA_WEBHOOK_CERT": str(self.cert),
            "MIOSA_WEBHOOK_KEY": str(self.key),
            "MIOSA_WEBHOOK_CA": str(self.cert),
            "MIOSA_WEBHOOK_CLIENT_CA": str(self.client_ca),
            "MIOSA_WEBHOOK_CLIENT_NAMES": "kube-apiserver-admission",
            "MIOSA_WEBHOOK_CONFIGURATION": ADMISSION_CONFIGURATION,
        }


ADMISSION_CONFIGURATION = "miosa-operator"
"""The ValidatingWebhookConfiguration of manifests/operator (the chart's fullname)."""


def install_admission(env: Environment, ca: Path) -> None:
    """manifests/operator's policies and webhook configuration, pointed at the local operator."""
    script = REPO / "hack" / "local-admission.py"
    manifest = subprocess.run(
        [sys.executable, str(script), "--url", WEBHOOK_URL, "--ca", str(ca)], capture_output=True, text=True, check=True
    ).stdout
    env.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=miosa-e2e-admission", "-f", "-", input=manifest)


@pytest.fixture(scope="session")
def admission(env: Environment, crds: None) -> Admission:
    """A serving certificate for the webhook on loopback (made once per environment) and the
    chart's admission configuration, installed before the operator starts, as a cluster has it."""
    from miosa_operator.webhook import self_signed

    pki = Path(env.kubeconfig).parent / "pki"
    directory = pki / "e2e-webhook"
    if not (directory / "tls.key").exists():
        directory.mkdir(exist_ok=True)
        self_signed(["127.0.0.1"], directory)
    files = Admission(
        directory / "tls.crt", directory / "tls.key", pki / "admission-ca.crt", pki / "admission-client.crt",
        pki / "admission-client.key",
    )  # fmt: skip
    install_admission(env, files.cert)
    return files


@pytest.fixture(scope="session")
def operator(
    env: Environment, operator_kubeconfig: Path, admission: Admission, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_dir = Path(os.environ.get("MIOSA_E2E_LOG_DIR", tmp_path_factory.mktemp("operator")))
    extra_env = {"KUBECONFIG": str(operator_kubeconfig), **admission.operator_env}
    if "MIOSA_REAL_NODE_ADDRESS" in env.values:
        # Static pods on the real node reach the artifact endpoint at the node's gateway
        # (hack/node.sh forwards MIOSA_NODE_HOST_PORTS there from the host's loopback).
        extra_env["MIOSA_ARTIFACTS_URL"] = f"http://{env.values['MIOSA_REAL_NODE_ADDRESS']}:{ARTIFACTS_PORT}"
    process = OperatorProcess(env, log_dir / "operator.log", extra_env=extra_env)
    process.start()
    process.wait_ready()
    yield process
    process.stop()
    if os.environ.get("CI"):
        shutil.copy(process.log_path, ENV_DIR / "logs" / "operator-e2e.log") if (ENV_DIR / "logs").exists() else None
