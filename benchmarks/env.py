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

    def _metrics(self) -> str:
        pki = self.spec.env_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = f"https://127.0.0.1:{self.spec.apiserver_port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            return response.read().decode()

    def apiserver_requests(self) -> dict[tuple[str, str, str], float]:
        """(verb, resource, subresource) -> requests served so far (the API server's own counter)."""
        counts: dict[tuple[str, str, str], float] = {}
        for labels, value in _samples(self._metrics(), "apiserver_request_total"):
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
            counts[key] = counts.get(key, 0.0) + value
        return counts

    def apiserver_watch_events(self) -> dict[str, float]:
        """group/resource -> watch events sent so far to all watchers (``apiserver_watch_events_total``):
        the operator's, the benchmark's own and kube-controller-manager's (its garbage collector
        and quota controller watch every resource: one event per change)."""
        counts: dict[str, float] = {}
        for labels, value in _samples(self._metrics(), "apiserver_watch_events_total"):
            key = f"{labels.get('group', '')}/{labels.get('resource', '')}"
            counts[key] = counts.get(key, 0.0) + value
        return counts

    def server_cpu_seconds(self) -> dict[str, float]:
        """CPU used so far by each server of the environment (etcd, kube-apiserver, the S3
        server, ...): what both sides of a comparison cost the machine besides themselves."""
        used: dict[str, float] = {}
        for pid_file in sorted((self.spec.env_dir / "run").glob("*.pid")):
            try:
                used[pid_file.stem] = tree_cpu_seconds(int(pid_file.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        return used

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


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
            found.append((labels, float(line.rsplit(" ", 1)[1])))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its descendants: their own time, plus what finished ones left in
    their parents' cutime/cstime (ingestion workers end under the operator's fork server)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return own + sum(tree_cpu_seconds(kid) for kid in kids)


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
    index: int = 0
    """Which of several operator processes at once (shards): each gets ports of its own."""

    def start(self) -> None:
        exe = Path(sys.executable).parent / "miosa-operator"
        command = self.command or [str(exe), "run", "--standalone", "-n", OPERATOR_NAMESPACES]
        # Ports next to the environment's API server (16544… by default), 3 per process, so that
        # benchmark environments of other checkouts (other ports) and shards never collide.
        base = self.env.spec.apiserver_port + 1 + 3 * self.index
        variables = {
            "MIOSA_RELEASES_URI": f"s3://{RELEASES_BUCKET}",
            "MIOSA_WEBHOOK": "off",
            "MIOSA_WEBHOOK_PORT": str(base),  # unused with the webhook off
            "MIOSA_GC_INTERVAL": "0",
            # Metrics on, as in production, on a port of their own (`make dev` uses 8082).
            "MIOSA_METRICS_PORT": str(base + 1),
            "MIOSA_ARTIFACTS_PORT": str(base + 2),
            # Each benchmark's versions are one tenant's (one namespace), and the baseline runs 16
            # threads.  The ingestion slots (4, of which 2 per tenant, 50 pending per tenant) share
            # the operator fairly between tenants; here they would measure that policy instead of
            # the pipeline, so the benchmark gives the operator the baseline's concurrency
            # (docs/benchmarks.md also gives a run with the defaults).
            "MIOSA_MAX_CONCURRENT_INGESTIONS": os.environ.get("MIOSA_BENCH_MAX_CONCURRENT_INGESTIONS", "16"),
            "MIOSA_TENANT_MAX_INGESTIONS": os.environ.get("MIOSA_BENCH_TENANT_MAX_INGESTIONS", "16"),
            "MIOSA_TENANT_MAX_PENDING": os.environ.get("MIOSA_BENCH_TENANT_MAX_PENDING", "2000"),
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
        """The operator's process tree: ingestion runs in worker processes under its fork server."""
        return tree_cpu_seconds(self.pid)

    def own_cpu_seconds(self) -> float:
        """The operator process alone (its threads), without the fork server and workers."""
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
