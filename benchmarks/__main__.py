"""``python -m benchmarks``: run the benchmarks against an isolated local environment.

    python -m benchmarks                      # everything (about 12-15 minutes on 2 cores)
    python -m benchmarks --only 1,4           # some of them
    python -m benchmarks --quick              # smaller samples, a smoke run (~9 minutes)

It starts (if not running) the benchmark environment in ``~/.cache/miosa-operator/bench-env``
on ports 23890/16543/19100 (never the e2e tests' environment), installs the CRDs, runs
its own operator (webhook off, no periodic GC, watching ``mb-op-*`` namespaces), prints
every figure with its baseline and ratio, and writes the results as JSON (and a Markdown
table) into the environment directory.  It stops the environment at the end if it started it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .common import markdown_table
from .context import Context, machine_info
from .env import CACHE, BenchEnv, EnvSpec, Operator

TITLES = {
    "1": "apply → ready latency",
    "2": "throughput, 1,000 versions",
    "3": "promote / rollback → live",
    "4": "ingestion speed, 256 MiB bundle",
    "5": "operator RSS",
    "6": "kubectl miosa versions list",
    "7": "garbage-collection sweep",
    "8": "HTTP API list, 50 of 10,000",
    "9": "ingestion memory: hostile bundles, concurrent worst cases, the bound",
    "10": "throughput with 1, 2 and 4 shards",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers (1-10); default: all")
    parser.add_argument("--quick", action="store_true", help="smaller samples: a smoke run, not figures to publish")
    parser.add_argument("--env-dir", default=str(CACHE / "bench-env"))
    parser.add_argument("--etcd-port", type=int, default=23890)
    parser.add_argument("--apiserver-port", type=int, default=16543)
    parser.add_argument("--s3-port", type=int, default=19100)
    parser.add_argument("--keep-env", action="store_true", help="leave the environment running even if this run started it")
    parser.add_argument("--keep-objects", action="store_true", help="do not delete the benchmark namespaces at the end")
    args = parser.parse_args(argv)

    wanted = {x.strip() for x in args.only.split(",") if x.strip()} or set(TITLES)
    unknown = wanted - set(TITLES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    spec = EnvSpec(Path(args.env_dir), args.etcd_port, args.apiserver_port, args.s3_port)
    env = BenchEnv(spec)
    run_id = time.strftime("%H%M%S")
    started = time.monotonic()
    env.up()
    os.environ.update(env.values)  # the in-process clients (collector, baseline) use this environment
    operator = Operator(env, spec.env_dir / "logs" / f"operator-bench-{run_id}.log")
    ctx = Context(env, operator, run_id, args.quick)
    ctx.results.details["machine"] = machine_info()
    ctx.results.details["run"] = {"id": run_id, "quick": args.quick, "only": sorted(wanted), "env_dir": str(spec.env_dir)}
    print(json.dumps(ctx.results.details["machine"], indent=1), flush=True)
    env.delete_bench_namespaces(wait=300)  # leftovers of an interrupted run would skew counts and RSS

    from . import fleet, hostile, ingestion, latency, promotion, throughput

    failures: list[str] = []

    def step(key: str, title: str, fn: Callable[[], None]) -> None:
        ctx.log(f"=== {key}: {title}")
        t = time.monotonic()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next benchmark
            traceback.print_exc()
            failures.append(f"{key}: {type(exc).__name__}: {exc}")
        ctx.log(f"=== {key} took {time.monotonic() - t:.0f} s")

    def start_operator() -> None:
        operator.start()
        ctx.log(f"operator started (pid {operator.pid}); log {operator.log_path}")
        operator.settle()
        if "5" in wanted:
            fleet.record_idle(ctx)

    try:
        if "4" in wanted:
            step("4", TITLES["4"], lambda: ingestion.run(ctx))
        if "9" in wanted:
            step("9", TITLES["9"], lambda: hostile.run(ctx))
        if wanted & {"1", "2", "3", "10"}:
            start_operator()
        if "1" in wanted:
            step("1", TITLES["1"], lambda: latency.run(ctx))
        if "3" in wanted:
            step("3", TITLES["3"], lambda: promotion.run(ctx))
        if "2" in wanted:
            step("2", TITLES["2"], lambda: throughput.run(ctx))
            if "7" in wanted:
                step("7", "real sweep over the throughput versions", lambda: throughput.real_sweep(ctx))
        if "10" in wanted:
            step("10", TITLES["10"], lambda: throughput.sharded(ctx))
        if wanted & {"5", "6", "7", "8"}:
            step("5/6/7/8", "10,000-version fleet: RSS, plugin, sweep, HTTP API", lambda: fleet.run(ctx, wanted))
    finally:
        operator.stop()
        if not args.keep_objects:
            env.delete_bench_namespaces(wait=0)
        ctx.results.details["failures"] = failures
        ctx.results.details["duration_s"] = round(time.monotonic() - started)
        out = spec.env_dir / f"results-{run_id}.json"
        out.write_text(
            json.dumps({"rows": [r.as_dict() for r in ctx.results.rows], "details": ctx.results.details}, indent=1, default=str)
        )
        table = markdown_table(ctx.results.rows)
        (spec.env_dir / f"results-{run_id}.md").write_text(table + "\n")
        print("\n" + table)
        print(f"\nresults: {out}  (took {ctx.results.details['duration_s']} s)")
        if failures:
            print("FAILED: " + "; ".join(failures))
        if env.started_here and not args.keep_env:
            env.down()
            print("[env] benchmark environment stopped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
