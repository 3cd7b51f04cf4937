"""The benchmark's own environment and operator process.

The benchmarks never touch the default local environment (``~/.cache/miosa-operator/env``,
ports 23790/16443/19000) that the e2e tests use: they run ``hack/env.sh`` with a state
directory and ports of their own, and start their own operator with the admission webhook
off and the periodic collector disabled.

The operator watches only the namespaces matching ``mb-op-*`` (a kopf namespace glob), so
the plain-Python baselines can work in ``mb-base-*`` namespaces next to an idle operator and
samples of both can alternate, which keeps the ratios meaningful on a noisy machine.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the env file's reader lives with the e2e suite that reads it too
from envfile import read_env_file  # noqa: E402

CACHE = Path(os.environ.get("MIOSA_CACHE", Path.home() / ".cache" / "miosa-operator"))
ENV_SCRIPT = REPO / "hack" / "env.sh"
RELEASES_BUCKET = "miosa-releases"
UPLOADS_BUCKET = "miosa-uploads"
OPERATOR_NAMESPACES = "mb-op-*"
BENCH_LABEL = "miosa.io/bench"


@dataclass(frozen=True)
class EnvSpec:
    """Where the benchmark environment lives; never the e2e tests' defaults."""

    env_dir: Path = CACHE / "bench-env"
    etcd_port: int = 23890
    apiserver_port: int = 16543
    s3_port: int = 19100

    def __post_init__(self) -> None:
        default = CACHE / "env"
        if (
            self.env_dir.resolve() == default.resolve()
            or self.apiserver_port == 16443
            or self.etcd_port == 23790
            or self.s3_port == 19000
        ):
            raise SystemExit("refusing to use the default local environment (the e2e tests' one); pick another dir and ports")

    @property
    def variables(self) -> dict[str, str]:
        return {
            "MIOSA_ENV_DIR": str(self.env_dir),
            "MIOSA_ETCD_PORT": str(self.etcd_port),
            "MIOSA_APISERVER_PORT": str(self.apiserver_port),
            "MIOSA_S3_PORT": str(self.s3_port),
        }


class BenchEnv:
    """The isolated control plane + S3 server, started on demand."""

    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec
        self.started_here = False
        self.values: dict[str, str] = {}
        self.bin_dir = CACHE / "bin"
        self._api: Any = None

    # ------------------------------------------------------------------ lifecycle
    def _script(self, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ENV_SCRIPT), command],
            env={**os.environ, **self.spec.variables},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def running(self) -> bool:
        status = self._script("status", timeout=60).stdout
        return bool(status) and "stopped" not in status

    def up(self) -> None:
        if not self.running():
            print(f"[env] starting the benchmark environment in {self.spec.env_dir}", flush=True)
            result = self._script("up")
            if result.returncode != 0:
                raise SystemExit(f"hack/env.sh up failed:\n{result.stderr[-3000:]}")
            self.started_here = True
        else:
            print(f"[env] reusing the running benchmark environment in {self.spec.env_dir}", flush=True)
        self.values = read_env_file(self.spec.env_dir / "env")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

    def down(self) -> None:
        self._script("down", timeout=120)

    # ------------------------------------------------------------------ clients
    @property
    def kubeconfig(self) -> str:
        return self.values["KUBECONFIG"]

    def process_env(self) -> dict[str, str]:
        """The environment a child process (operator, kubectl, plugin) needs."""
        path = f"{self.bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        return {**os.environ, **self.values, "PATH": path}

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", self.kubeconfig, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def api(self) -> Any:
        """A kubernetes ApiClient for this environment (cached; thread-safe)."""
        if self._api is None:
            os.environ["KUBECONFIG"] = self.kubeconfig
            from miosa_operator.kube.client import load_api_client

            self._api = load_api_client(pool_size=64)
        return self._api

    def s3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.values["MIOSA_S3_ENDPOINT"],
            region_name=self.values["MIOSA_S3_REGION"],
            aws_access_key_id=self.values["MIOSA_S3_ACCESS_KEY_ID"],
            aws_secret_access_key=self.values["MIOSA_S3_SECRET_ACCESS_KEY"],
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=64,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def apiserver_requests(self) -> dict[tuple[str, str, str], float]:
        """(verb, resource, subresource) -> requests served so far (the API server's own counter)."""
        pki = self.spec.env_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = f"https://127.0.0.1:{self.spec.apiserver_port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            text = response.read().decode()
        counts: dict[tuple[str, str, str], float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return counts

    # ------------------------------------------------------------------ namespaces
    def create_namespace(self, name: str) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api())
        core.create_namespace({"metadata": {"name": name, "labels": {BENCH_LABEL: "true"}}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # pods need the default ServiceAccount
            if any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items):
                return
            time.sleep(0.2)

    def delete_bench_namespaces(self, wait: float = 0) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api())
        names = [n.metadata.name for n in core.list_namespace(label_selector=f"{BENCH_LABEL}=true").items]
        for name in names:
            try:
                core.delete_namespace(name)
            except Exception:  # noqa: BLE001 - already terminating
                pass
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline:
            if not core.list_namespace(label_selector=f"{BENCH_LABEL}=true").items:
                return
            time.sleep(1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Operator:
    """``miosa-operator run --standalone -n 'mb-op-*'`` as a child process of the benchmark."""

    env: BenchEnv
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    command: list[str] | None = None  # default: the real operator
    ready_marker: str = "miosa-operator configured"

    def start(self) -> None:
        exe = Path(sys.executable).parent / "miosa-operator"
        command = self.command or [str(exe), "run", "--standalone", "-n", OPERATOR_NAMESPACES]
        variables = {
            "MIOSA_RELEASES_URI": f"s3://{RELEASES_BUCKET}",
            "MIOSA_WEBHOOK": "off",
            "MIOSA_WEBHOOK_PORT": "19543",  # unused with the webhook off; never the e2e tests' 19443
            "MIOSA_GC_INTERVAL": "0",
            # Metrics on, as in production, on a port of their own (`make dev` uses 8082).
            "MIOSA_METRICS_PORT": "19544",
            # One bundle serves every benchmark namespace: an operator-widened source prefix
            # (by default a version may only name <uploads>/<its namespace>/).
            "MIOSA_SOURCE_PREFIXES": f"s3://{UPLOADS_BUCKET}/bench/",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the operator process writes it until stopped
        log.write(f"\n===== benchmark operator start {time.strftime('%H:%M:%S')} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            command,
            cwd=str(REPO),
            env={**self.env.process_env(), **variables},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_started()

    def _wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited at start; see {self.log_path}")
            text = self.log_path.read_text(errors="replace")
            if self.ready_marker in text.rsplit("===== benchmark operator start", 1)[-1]:
                time.sleep(1.0)  # watch streams open right after the startup handlers
                return
            time.sleep(0.2)
        raise RuntimeError(f"the operator did not start in {timeout}s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self.proc = None

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def settle(self, quiet_cpu: float = 0.05, window: float = 3.0, timeout: float = 600) -> float:
        """Wait until the operator uses less than ``quiet_cpu`` CPU-seconds per second; return the wait."""
        start = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - start < timeout:
            time.sleep(window)
            now = self.cpu_seconds()
            if (now - last) / window < quiet_cpu:
                return time.monotonic() - start
            last = now
        return time.monotonic() - start
