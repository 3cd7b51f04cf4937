"""Tools for the fault tests: a breakable proxy in front of the real S3 server, and a
sampler of the operator's memory (its whole process tree: the operator, the ingestion fork
server and its workers, as a container's cgroup would count them)."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
)
UNAVAILABLE_BODY = b"<?xml version='1.0'?><Error><Code>ServiceUnavailable</Code><Message>down for the test</Message></Error>"


class S3Proxy:
    """A TCP proxy to the S3 server that a test can break and fix while the operator runs.

    Modes: ``forward``; ``unavailable`` (every request gets a 503 ServiceUnavailable, as an
    overloaded S3 does); ``refuse`` (connections are closed at once: a network fault).
    ``throttle`` limits what the server sends back (bytes per second), to stretch ingestions.
    Changing the mode drops the connections in use, so pooled keep-alive connections feel it.
    """

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = port
        self.mode = "forward"
        self.throttle: int | None = None
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, name="s3-proxy", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str, throttle: int | None = None) -> None:
        self.mode, self.throttle = mode, throttle
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def stop(self) -> None:
        self._stopped = True
        self.set_mode("refuse")
        _close(self._listener)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        mode = self.mode
        if mode == "refuse":
            _close(client)
            return
        if mode == "unavailable":
            _read_head(client)
            try:
                client.sendall(UNAVAILABLE % len(UNAVAILABLE_BODY) + UNAVAILABLE_BODY)
            except OSError:
                pass
            _close(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
        self._pump(upstream, client, self.throttle)

    def _pump(self, source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        try:
            while True:
                data = source.recv(16384 if rate is None else min(16384, max(1024, rate // 10)))
                if not data:
                    break
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _read_head(sock: socket.socket) -> None:
    sock.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


# ---------------------------------------------------------------------------- memory


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def proportional_set(pid: int) -> int:
    """PSS in bytes (shared pages divided among their users: what the tree really costs)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class MemorySampler:
    """Samples the PSS of an operator's process tree until stopped; keeps the peak."""

    pid: int
    interval: float = 0.1
    peak: int = 0
    peak_operator_rss: int = 0
    samples: int = 0
    operator_cpu: float = 0.0
    """CPU seconds the operator process itself used while sampled (its workers excluded)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._cpu_start = cpu_seconds(self.pid)
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.operator_cpu = cpu_seconds(self.pid) - self._cpu_start

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(proportional_set(pid) for pid in process_tree(self.pid))
            self.peak = max(self.peak, total)
            self.peak_operator_rss = max(self.peak_operator_rss, resident(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)
