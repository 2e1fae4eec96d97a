"""The benchmark of issue 7: the exchange beside this machine's ceiling, on SQLite and PostgreSQL.

Every figure is printed beside a ceiling measured in the same run on the same
machine, and the ratio of the two is the headline (1.0 is the ceiling): shared
machines drift, ratios much less. Measures (`--only`, comma-separated):

  drain    backlog drain: N notices queued at A while B is down (B's process not
           started), then B started: notices/s from B serving until A holds every
           receipt. Ceiling: a bare gRPC stream (mTLS, two processes) of the same
           envelope bytes, one reply of a receipt's size per message.
  submit   8 concurrent SubmitNotice calls at A, each notice delivered to B: notices/s
           until every receipt. Ceiling: a bare unary echo of the same request bytes,
           same concurrency, server TLS as on the authority port.
  latency  submit at A -> the event on B's WatchInbox, open loop at 100 notices/s:
           p50, p99. Ceiling: a bare unary round trip on the same schedule.
  fanout   one urgent TravelAlert to 20 nodes (20 + 1 `serve` processes): time until
           all 20 receipts (median of repeats). Ceiling: 20 bare mTLS calls with the
           same envelope to 20 processes in parallel.
  bulk     a ContentHashReferral of --bulk-hashes hashes: submit, deliver + store, read
           (GetNotice on B). Ceiling: bare calls carrying the same bytes each way.
  growth   ListInbox (first page) and GetDeliveryStatus on B with --growth-large
           notices in its store against --growth-small: p50 / p99 and their ratio
           (target <= 2). Synthetic copies of real notices are written straight into
           the store; the queries go through the API.
Peak memory (VmHWM) of every node process is recorded in each measure.

Usage:
    python scripts/bench.py [--engine sqlite|postgres|both] [--only drain,submit,...]
        [--quick | --scale 0.1] [--json bench.json] [--b-processes 2] [per-measure sizes]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import platform
import sys
from pathlib import Path

from rich.console import Console

from exchange.harness.bench import (
    MEASURES,
    BenchError,
    MeasureResult,
    Settings,
    print_table,
    write_json,
)
from exchange.logs import configure_logging

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
_SIZES = {
    "drain_notices": "notices queued for the backlog drain",
    "submit_notices": "notices of the submit-throughput measure",
    "concurrency": "concurrent SubmitNotice calls",
    "latency_notices": "notices of the latency measure",
    "latency_rate": "notices/s offered in the latency measure",
    "fanout_nodes": "recipients of the fan-out alert (at most 25)",
    "fanout_repeats": "alerts timed in the fan-out measure",
    "bulk_hashes": "hashes in the bulk referral",
    "growth_small": "notices in the store, small size",
    "growth_large": "notices in the store, large size",
    "growth_queries": "queries of each kind at each size",
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--only", default=",".join(MEASURES), help="comma-separated measures")
    parser.add_argument("--quick", action="store_true", help="sizes small enough for a test")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--b-processes",
        type=int,
        default=1,
        help="serve processes of node B in the drain (PostgreSQL; needs the scale-out harness)",
    )
    defaults = Settings("sqlite", "")
    for name, help_text in _SIZES.items():
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), help=help_text)
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(MEASURES))
    if unknown or not only:
        parser.error(f"--only: unknown measure(s) {unknown}; choose from {', '.join(MEASURES)}")
    args.only = only
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.b_processes < 1:
        parser.error("--b-processes must be at least 1")
    if args.b_processes > 1 and args.engine != "postgres":
        parser.error("--b-processes > 1 needs --engine postgres (one database, several processes)")
    return args


def _settings(args: argparse.Namespace, engine: str) -> Settings:
    settings = Settings(engine, args.postgres_url, b_processes=args.b_processes)
    settings = settings.quick() if args.quick else settings.scaled(args.scale)
    explicit = {name: getattr(args, name) for name in _SIZES if getattr(args, name) is not None}
    settings = dataclasses.replace(settings, **explicit)
    if not 1 <= settings.fanout_nodes <= 25:
        raise SystemExit("--fanout-nodes: between 1 and 25 (the harness has 26 countries)")
    if settings.growth_large <= settings.growth_small or settings.growth_small < 100:
        raise SystemExit("--growth-small: at least 100, and below --growth-large")
    return settings


def main() -> int:
    args = _arguments()
    configure_logging("warning", "json")
    console = Console(width=None if sys.stdout.isatty() else 140)
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    run = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": list(os.getloadavg()),
        "settings": {},
    }
    results: list[MeasureResult] = []
    try:
        for engine in engines:
            settings = _settings(args, engine)
            run["settings"][engine] = dataclasses.asdict(settings)  # type: ignore[index]
            for name in args.only:
                console.print(f"[bold]{engine}[/]: {name} ...")
                began = dt.datetime.now(dt.UTC)
                result = asyncio.run(MEASURES[name](settings))
                result.seconds = (dt.datetime.now(dt.UTC) - began).total_seconds()
                results.append(result)
                console.print(f"  done in {result.seconds:.0f} s")
    except BenchError as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    finally:
        if results:
            print_table(results, console)
            if args.json:
                write_json(results, args.json, run)
                console.print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
