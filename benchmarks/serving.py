"""``python -m benchmarks.serving``: the static server against Debian's nginx, same tree, same run.

    make bench-serving                          # 3 rounds of 10 s per cell, ~5 minutes
    python -m benchmarks.serving --seconds 3 --rounds 1     # a smoke run

Serves one release tree (a 734-byte page, a 10 KiB and a 1 MiB file) with ``miosa-operator
serve`` and with Debian's nginx configured as the operator would configure it (one worker,
like one server process per pod; sendfile; no symlinks, no listing; access log on, as ours),
both pinned to CPU 0 when ``taskset`` exists, the load generators to the other CPUs.  Then,
for each file: requests/s and p99 latency at 64 concurrent connections with ``wrk`` (HTTP/1.1
keep-alive) and with ``ab -k`` (HTTP/1.0 keep-alive, the case the old server stalled on).
Cells alternate between the servers, each round in a new order, and the median of the rounds
is reported.  Needs nginx, wrk and ab: installed with apt-get when missing (as root);
nothing else in the repository needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CONNECTIONS = 64
FILES = {"page": ("index.html", 734), "10 KiB": ("assets/data-10k.bin", 10 * 1024), "1 MiB": ("assets/data-1m.bin", 1 << 20)}
PACKAGES = {"nginx": "nginx", "wrk": "wrk", "ab": "apache2-utils"}

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  include /etc/nginx/mime.types;
  access_log {dir}/nginx-access.log combined;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 15s;
  client_header_timeout 15s;
  server_tokens off;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    disable_symlinks on;
    autoindex off;
    location / {{ try_files $uri $uri/index.html =404; }}
  }}
}}
"""


@dataclass
class Cell:
    server: str
    file: str
    protocol: str
    requests_per_s: float
    p99_ms: float
    errors: int


def ensure_tools() -> None:
    missing = [package for tool, package in PACKAGES.items() if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"needs {', '.join(missing)}: apt-get install {' '.join(missing)} (as root)")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    )


def make_tree(root: Path) -> None:
    rng = random.Random(7)
    for _, (name, size) in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".html"):
            path.write_bytes((b"<!doctype html><title>bench</title>" + b"<p>miosa</p>" * 100)[:size])
        else:
            path.write_bytes(rng.randbytes(size))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def start_ours(root: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "miosa-operator"
    log = open(work / "ours-access.log", "wb")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(
        [*pinned("0"), str(exe), "serve", "--dir", str(root), "--port", str(port), "--host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_nginx(root: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port, root=root))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen(
        [*pinned("0"), nginx, "-c", str(conf), "-e", str(work / "nginx-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def load_cpus() -> str:
    count = os.cpu_count() or 1
    return f"1-{count - 1}" if count > 1 else "0"


def run_wrk(url: str, seconds: float) -> tuple[float, float, int]:
    out = subprocess.run(
        [*pinned(load_cpus()), "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*?(\d+) timeout", out)
    return rate, float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"), int(errors.group(1) or 0) if errors else 0


def run_ab(url: str, seconds: float) -> tuple[float, float, int]:
    out = subprocess.run(
        [*pinned(load_cpus()), "ab", "-k", "-q", "-r", f"-c{CONNECTIONS}", f"-t{seconds:g}", "-n", "10000000", "-s", "10", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+(\d+)", out, re.MULTILINE)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    return (
        float(rate.group(1)) if rate else 0.0,
        float(p99.group(1)) if p99 else float("nan"),
        int(failed.group(1)) if failed else -1,
    )


def measure(seconds: float, rounds: int) -> tuple[list[Cell], dict[str, object]]:
    work = Path(tempfile.mkdtemp(prefix="miosa-bench-serving-"))
    work.chmod(0o755)  # nginx's workers run as an unprivileged user when started as root
    root = work / "site"
    make_tree(root)
    ports = {"miosa-operator serve": free_port(), "nginx": free_port()}
    servers = {
        "miosa-operator serve": start_ours(root, ports["miosa-operator serve"], work),
        "nginx": start_nginx(root, ports["nginx"], work),
    }
    samples: dict[tuple[str, str, str], list[tuple[float, float, int]]] = {}
    try:
        for port in ports.values():
            wait_ready(f"http://127.0.0.1:{port}/index.html")
        cells = [
            (server, label, protocol)
            for server in ports
            for label in FILES
            for protocol in ("HTTP/1.1 (wrk)", "HTTP/1.0 keep-alive (ab -k)")
        ]
        for round_ in range(rounds):
            random.Random(round_).shuffle(cells)
            for server, label, protocol in cells:
                url = f"http://127.0.0.1:{ports[server]}/{FILES[label][0]}"
                result = run_wrk(url, seconds) if protocol.startswith("HTTP/1.1") else run_ab(url, seconds)
                samples.setdefault((server, label, protocol), []).append(result)
                print(
                    f"round {round_ + 1}: {server:22} {label:7} {protocol:28} {result[0]:10.0f} req/s  p99 {result[1]:8.1f} ms",
                    flush=True,
                )
        rss = {name: _rss_kib(proc.pid) for name, proc in servers.items()}
    finally:
        for proc in servers.values():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    results = [
        Cell(
            server,
            label,
            protocol,
            statistics.median(s[0] for s in runs),
            statistics.median(s[1] for s in runs),
            sum(s[2] for s in runs),
        )
        for (server, label, protocol), runs in sorted(samples.items())
    ]
    details = {"seconds": seconds, "rounds": rounds, "connections": CONNECTIONS, "rss_kib_after": rss, "machine": _machine()}
    return results, details


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _machine() -> dict[str, object]:
    nginx = subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip()
    import aiohttp

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": nginx,
        "load_average": os.getloadavg(),
        "pinned": bool(pinned("0")),
    }


def table(cells: list[Cell]) -> str:
    rows = [
        "| file | protocol | miosa-operator serve req/s | p99 | nginx req/s | p99 | ours / nginx |",
        "|---|---|---|---|---|---|---|",
    ]
    by_key = {(c.server, c.file, c.protocol): c for c in cells}
    for label in FILES:
        for protocol in ("HTTP/1.1 (wrk)", "HTTP/1.0 keep-alive (ab -k)"):
            ours, nginx = by_key[("miosa-operator serve", label, protocol)], by_key[("nginx", label, protocol)]
            rows.append(
                f"| {label} | {protocol} | {ours.requests_per_s:,.0f} | {ours.p99_ms:.1f} ms | {nginx.requests_per_s:,.0f} | "
                f"{nginx.p99_ms:.1f} ms | {ours.requests_per_s / nginx.requests_per_s:.2f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each cell (default: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported (default: 3)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    ensure_tools()
    cells, details = measure(args.seconds, args.rounds)
    print()
    print(table(cells))
    print()
    print(json.dumps(details, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"cells": [c.__dict__ for c in cells], **details}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
