"""The `meridian` command.

  meridian run      embedded replay of the shared data through all six services, with a report
  meridian backtest replay a range on an isolated run (in-process or --kafka): metrics, chart,
                    trades, Monte Carlo, under reports/<strategy>/<run id>/
  meridian bench    candles/s through the embedded pipeline and over Kafka, and their ratio
  meridian config   the configuration reference (every variable, default and meaning)
  meridian data     market data: backfill | gaps | repair | load-csv
  meridian research sweep (a grid in one pass) | optimize (Optuna walk-forward study)
  meridian promote  a study's best trial -> active_configs, announced on control.v1
  meridian train    walk-forward training of the meta-model (XGBoost -> ONNX -> registry)
  meridian model    model registry: promote a version
  meridian control  operator commands on control.v1: kill-switch engage|clear, status
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import orjson

from meridian_cli import backtest, control, data, embedded_db, promote, report, research, train
from meridian_cli.pipeline import run_inprocess
from meridian_cli.progress import ProgressLine
from meridian_cli.scripts import REPO
from meridian_cli.settings import SETTINGS_CLASSES, PipelineSettings
from meridian_common import config, logs, tracing
from meridian_ingest.sources import csv_rows


def count_candles(settings: PipelineSettings) -> int:
    """Every candle a CSV replay publishes (0 otherwise: unknown): each symbol's rows, twice
    for a symbol also replayed as its perpetual (MERIDIAN_INGEST_REPLAY_PERPETUALS)."""
    ing = settings.ingest
    if ing.source != "csv":
        return 0
    return sum(
        sum(1 for _ in csv_rows(ing.data_dir, s, ing.timeframe, ing.start_ms, ing.end_ms))
        * (2 if s in ing.replay_perpetuals else 1)
        for s in ing.symbols)


def cmd_run(ns: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, object]] = {"common": {"bus": "inprocess"}}
    if ns.symbols:
        overrides["ingest"] = {"symbols": ns.symbols}
    for field in ("start", "end"):
        if getattr(ns, field):
            overrides.setdefault("ingest", {})[field] = getattr(ns, field)
    settings = PipelineSettings.load(**overrides)
    logs.setup("meridian", "WARNING" if not ns.verbose else "INFO")
    if settings.common.database_url is not None:
        url = settings.common.database_url.get_secret_value()
    else:
        print("starting embedded PostgreSQL ...", file=sys.stderr)
        url = embedded_db.fresh_database(embedded_db.start(Path(ns.pg_dir)), "meridian_run")
    total = count_candles(settings) or None
    print(f"replaying {', '.join(settings.ingest.symbols)} ({settings.ingest.timeframe}) "
          f"through features -> signals -> risk -> execution -> ledger", file=sys.stderr)
    tracing.configure("embedded")  # off unless OTEL_* says otherwise
    try:
        stats = asyncio.run(run_inprocess(settings, url, ProgressLine("replay"), total))
    finally:
        tracing.shutdown()
    result = report.build(url, settings.ledger.account, settings.ledger.initial_capital)
    result["run"] = {
        "mode": "embedded", "candles": stats.candles, "seconds": round(stats.seconds, 3),
        "candles_per_second": round(stats.candles_per_second), "dead_letters": stats.dead_letters,
        "symbols": list(settings.ingest.symbols), "timeframe": settings.ingest.timeframe,
        "start": settings.ingest.start, "end": settings.ingest.end,
    }
    print()
    print(report.render(result))
    print(f"{stats.candles:,} candles in {stats.seconds:.1f}s "
          f"({stats.candles_per_second:,.0f} candles/s)")
    out = Path(ns.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")
    return 0


def cmd_config(ns: argparse.Namespace) -> int:
    print("| variable | default | meaning |\n|---|---|---|")
    for klass in SETTINGS_CLASSES:
        for name, default, desc in config.reference(klass):
            print(f"| `{name}` | `{default}` | {desc} |")
    return 0


def cmd_bench(ns: argparse.Namespace) -> int:
    from meridian_cli.bench import main as bench_main

    return bench_main(ns)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meridian", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="embedded replay with a report")
    run.add_argument("--symbols",
                     help="comma-separated (default: MERIDIAN_INGEST_SYMBOLS, else all four)")
    run.add_argument("--start", help="first candle, UTC ISO date (default: whole span)")
    run.add_argument("--end", help="end (exclusive), UTC ISO date")
    run.add_argument("--report", default=str(REPO / "reports" / "embedded-run.json"))
    run.add_argument("--pg-dir", default=str(REPO / ".local" / "embedded-pg"),
                     help="embedded PostgreSQL data directory (kept between runs)")
    run.add_argument("-v", "--verbose", action="store_true", help="service logs on stderr")
    run.set_defaults(func=cmd_run)
    cfg = sub.add_parser("config", help="print the configuration reference (Markdown)")
    cfg.set_defaults(func=cmd_config)
    bench = sub.add_parser("bench", help="throughput, embedded vs Kafka")
    bench.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    bench.add_argument("--start", default="2021-01-01")
    bench.add_argument("--end", default="2022-01-01")
    bench.add_argument("--no-kafka", action="store_true",
                       help="no figure that needs a Kafka broker (pipeline over Kafka, "
                            "signal -> fill latency, live ingest latency)")
    bench.add_argument("--no-ingest", action="store_true",
                       help="skip the ingest figures (backfill, rate limit, live latency)")
    bench.set_defaults(func=cmd_bench)
    backtest.add_parser(sub)
    promote.add_parser(sub)
    research.add_parser(sub)
    data.add_parser(sub)
    train.add_parser(sub)
    control.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    ns = parser().parse_args(argv)
    try:
        code = ns.func(ns)
    except config.ConfigError as exc:
        print(f"meridian: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    logging.shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
