"""9. Ingestion memory: what each hostile bundle costs, and the operator's memory bound.

Every shape of issue 9 (``tests/hostile_bundles.py``: the same bytes the unit and e2e tests
use) is ingested the way the operator does it, in a limited worker (``ingest_isolated``
with the default budget); the worker reports its own peak RSS and CPU time. Baseline: the
~1 MiB ordinary site of benchmark 1, ingested the same way in the same run.

Then the configured maximum of concurrent worst cases: ``MIOSA_MAX_CONCURRENT_INGESTIONS``
(4) workers at once, each on the largest bundle the default caps accept (10,000 files 32
levels deep, all paths distinct), while the PSS of this process tree (this process, the fork
server, the workers: what the operator's cgroup would count on top of its base) is sampled.
The bound row is the documented formula at the chart's defaults against the chart's limit.
No cluster is needed.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from miosa_operator.ingest.bundle import BundleRejected
from miosa_operator.ingest.isolation import Budget, Usage, ingest_isolated
from miosa_operator.settings import Settings

from .common import MiB, Row, one_mib_bundle
from .context import Context
from .env import REPO

sys.path.insert(0, str(REPO / "tests"))  # the hostile shapes live with the tests that use them
import hostile_bundles as hostile  # noqa: E402

BASE = 200 * MiB
"""Idle operator (benchmark 5: 132 MB) plus the ingestion fork server (~20 MiB), rounded up."""
WATCH_PER_VERSION = 16 << 10
"""Benchmark 5: 291 MB with 10,000 versions watched against 132 MB idle."""
CHART_LIMIT = 2048 * MiB
CHART_VERSIONS = 10_000


def memory_bound(versions: int, slots: int, budget: int) -> int:
    """base + watch memory for ``versions`` objects + ``slots`` x the worker budget."""
    return BASE + versions * WATCH_PER_VERSION + slots * budget


def ingest(data: bytes, budget: Budget = Budget()) -> tuple[str, Usage, float]:
    seen: list[Usage] = []
    start = time.perf_counter()
    verdict = "accepted"
    with tempfile.TemporaryFile(prefix="mb-hostile-") as out:
        try:
            ingest_isolated(
                io.BytesIO(data), out, expected_sha256=hashlib.sha256(data).hexdigest(), budget=budget, usage=seen.append
            )
        except BundleRejected as rejected:
            verdict = rejected.reason
    return verdict, seen[0] if seen else Usage(), time.perf_counter() - start


def run(ctx: Context) -> None:
    site = one_mib_bundle(ctx.cache).path.read_bytes()
    base_runs = [ingest(site) for _ in range(3)]
    base_rss = statistics.median(u.peak_rss for _, u, _ in base_runs) / MiB
    base_cpu = statistics.median(u.cpu_seconds for _, u, _ in base_runs)
    details: dict[str, Any] = {"ordinary": {"peak_rss_mib": base_rss, "cpu_s": base_cpu}, "shapes": {}}
    for name, shape in hostile.SHAPES.items():
        data = shape.build()
        verdict, usage, wall = ingest(data)
        rss, cpu = usage.peak_rss / MiB, usage.cpu_seconds
        details["shapes"][name] = {
            "bytes": len(data),
            "verdict": verdict,
            "peak_rss_mib": rss,
            "peak_vm_mib": usage.peak_vm / MiB,
            "cpu_s": cpu,
            "wall_s": wall,
        }
        expected = shape.reason or "accepted"
        ctx.log(f"hostile {name}: {verdict} (expected {expected}), peak {rss:.0f} MiB RSS, {cpu:.2f} s CPU")
        ctx.results.add(
            Row(
                "9",
                f"{name}: worker peak RSS ({verdict})",
                round(rss, 1),
                "MiB",
                round(base_rss, 1),
                "ordinary 1 MiB site",
                target=f"ends {expected}",
                ok=verdict == expected,
                note=f"{cpu:.2f} s CPU (ordinary {base_cpu:.2f} s)",
            )
        )

    concurrent = Settings.defaults().max_concurrent_ingestions
    widest = hostile.widest_accepted()
    peak, outcomes = _concurrent(widest, concurrent)
    bound_now = memory_bound(0, concurrent, Budget().memory_bytes) - BASE
    details["concurrent"] = {"workers": concurrent, "peak_pss_mib": peak / MiB, "outcomes": outcomes}
    ctx.results.add(
        Row(
            "9",
            f"{concurrent} concurrent widest bundles: peak PSS of the process tree",
            round(peak / MiB),
            "MiB",
            round(bound_now / MiB),
            f"{concurrent} x MIOSA_INGEST_MEMORY",
            target="< budget",
            ok=peak < bound_now and all(o == "accepted" for o in outcomes),
            note="this process + fork server + workers",
        )
    )
    bound = memory_bound(CHART_VERSIONS, concurrent, Budget().memory_bytes)
    details["bound"] = {"formula": "200 MiB + 16 KiB x versions + slots x MIOSA_INGEST_MEMORY", "chart_defaults_mib": bound / MiB}
    ctx.results.add(
        Row(
            "9",
            "memory bound at chart defaults (10,000 versions, 4 x 256 MiB)",
            round(bound / MiB),
            "MiB",
            round(CHART_LIMIT / MiB),
            "chart memory limit",
            target="< limit with margin",
            ok=bound < 0.8 * CHART_LIMIT,
        )
    )
    ctx.results.details["hostile_ingestion"] = details


def _tree_pss(pid: int) -> int:
    """PSS of ``pid`` and its descendants (shared pages divided among their users)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total


def _concurrent(data: bytes, workers: int) -> tuple[int, list[str]]:
    """Peak PSS of this process tree while ``workers`` ingestions of ``data`` run at once."""
    outcomes: list[str] = []
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_pss(os.getpid()))
            done.wait(0.05)

    def one() -> None:
        outcomes.append(ingest(data)[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=one) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    return peak, outcomes


def main() -> None:
    """Stand-alone: ``python -m benchmarks.hostile`` runs 4 and 9 (no cluster, no environment)."""
    from . import ingestion
    from .common import Results, markdown_table

    class Standalone:
        results = Results()
        cache = Path.home() / ".cache" / "miosa-operator" / "bench-cache"
        quick = False

        @staticmethod
        def log(message: str) -> None:
            print(message, flush=True)

        @staticmethod
        def scale(full: int, quick: int) -> int:
            return full

    ingestion.run(Standalone)  # type: ignore[arg-type]
    run(Standalone)  # type: ignore[arg-type]
    print(markdown_table(Standalone.results.rows))


if __name__ == "__main__":
    main()
