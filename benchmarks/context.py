"""What every benchmark gets: the environment, the operator, the bundles, the results."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import BundleFile, Results, one_mib_bundle
from .env import CACHE, REPO, UPLOADS_BUCKET, BenchEnv, Operator


def operator_max_workers() -> int:
    """``settings.execution.max_workers`` as the operator's startup handler sets it."""
    source = (REPO / "operator" / "miosa_operator" / "handlers.py").read_text()
    match = re.search(r"settings\.execution\.max_workers\s*=\s*(\d+)", source)
    return int(match.group(1)) if match else 16


@dataclass
class Context:
    env: BenchEnv
    operator: Operator
    run_id: str
    quick: bool
    results: Results = field(default_factory=Results)
    cache: Path = CACHE / "bench-cache"
    _s3: Any = None
    _bundle_uri: str | None = None
    _bundle: BundleFile | None = None

    def ns(self, role: str, kind: str) -> str:
        """``mb-op-…`` namespaces are watched by the operator, ``mb-base-…`` are not."""
        return f"mb-{role}-{kind}-{self.run_id}"

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.env.s3()
        return self._s3

    def site_bundle(self) -> tuple[BundleFile, str]:
        """The ~1 MiB static bundle, uploaded once per run."""
        if self._bundle is None or self._bundle_uri is None:
            self._bundle = one_mib_bundle(self.cache)
            key = f"bench/{self.run_id}/site-1mib.tar.zst"
            self.s3.put_object(Bucket=UPLOADS_BUCKET, Key=key, Body=self._bundle.path.read_bytes())
            self._bundle_uri = f"s3://{UPLOADS_BUCKET}/{key}"
        return self._bundle, self._bundle_uri

    def api(self) -> Any:
        return self.env.api()

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def machine_info() -> dict[str, Any]:
    import platform
    import subprocess

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"

    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    from importlib.metadata import version as pkg

    packages = {}
    for name in ("kopf", "kubernetes", "boto3", "pydantic", "zstandard", "urllib3", "aiohttp"):
        try:
            packages[name] = pkg(name)
        except Exception:  # noqa: BLE001
            packages[name] = "?"
    bin_dir = CACHE / "bin"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": packages,
        "kube-apiserver": version([str(bin_dir / "kube-apiserver"), "--version"]),
        "etcd": version([str(bin_dir / "etcd"), "--version"]),
        "kwok": version([str(bin_dir / "kwok"), "--version"]),
        "versitygw": version([str(bin_dir / "versitygw"), "--version"]),
        "zstd": version(["zstd", "--version"]),
        "tar": version(["tar", "--version"]),
        "load_avg_at_start": os.getloadavg(),
    }
