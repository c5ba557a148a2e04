"""`meridian backtest`: the real services replay a range on an isolated run, then a report.

Isolation: every run gets its own database (`bt_<run id>`, dropped and recreated, on the
embedded server or on MERIDIAN_DATABASE_URL's server) and, over Kafka, its own topic prefix
(`bt.<run id>.<start ms>.`, deleted afterwards), so a backtest never reads or writes live
topics or tables, and two backtests never see each other's records.

In-process (default) the six services run as tasks over the in-process bus; with `--kafka` the
five consumers run as separate processes against MERIDIAN_KAFKA_BOOTSTRAP and ingest replays
into the run's topics. Both are deterministic (event-time merges, no wall clock in any
decision), so both give the same report; the run id is a fingerprint of the resolved settings,
range and symbols, so the same inputs land in the same directory with the same files.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meridian_cli import backtest_report, embedded_db
from meridian_cli.backtest_spec import BacktestSpec, env_for, make_spec
from meridian_cli.pipeline import consumers, run_inprocess
from meridian_cli.progress import ProgressLine
from meridian_cli.scripts import REPO
from meridian_common import config, logs
from meridian_common.db import conninfo

log = logging.getLogger(__name__)


def _server_url(spec: BacktestSpec, pg_dir: Path) -> str:
    configured = spec.settings(common={"bus": "inprocess"}).common.database_url
    if configured is not None:
        return conninfo(configured.get_secret_value())
    print("starting embedded PostgreSQL ...", file=sys.stderr)
    return embedded_db.start(pg_dir)


def _database(spec: BacktestSpec, pg_dir: Path) -> str:
    name = "bt_" + spec.run_id().replace("-", "_").lower()
    return embedded_db.fresh_database(_server_url(spec, pg_dir), name)


def _candles(spec: BacktestSpec) -> int:
    from meridian_cli.main import count_candles

    return count_candles(spec.settings(common={"bus": "inprocess"}))


def run_embedded(spec: BacktestSpec, url: str, total: int) -> dict[str, Any]:
    settings = spec.settings(common={"bus": "inprocess",
                                     "topic_prefix": f"bt.{spec.run_id()}."})
    stats = asyncio.run(run_inprocess(settings, url, ProgressLine("backtest"), total or None))
    if stats.dead_letters:
        raise RuntimeError(f"{stats.dead_letters} record(s) went to a dead-letter topic: the "
                           "report would not describe the whole range")
    return {"bus": "inprocess", "candles": stats.candles, "seconds": round(stats.seconds, 3),
            "candles_per_second": round(stats.candles_per_second)}


def run_kafka(spec: BacktestSpec, url: str, total: int) -> dict[str, Any]:
    from meridian_cli.kafka_run import KafkaPipeline
    from meridian_cli.kafka_topics import delete_prefixed, require_broker

    common = spec.settings(common={"bus": "kafka"}).common
    require_broker(common.kafka_bootstrap)
    prefix = f"bt.{spec.run_id()}.{int(time.time() * 1000)}."
    env = {**env_for(spec), "MERIDIAN_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
           "MERIDIAN_DATABASE_URL": url, "MERIDIAN_TOPIC_PREFIX": prefix}
    account = spec.settings(common={"bus": "kafka"}).ledger.account
    logs_dir = Path(tempfile.mkdtemp(prefix="meridian-backtest-"))
    print(f"over Kafka at {common.kafka_bootstrap}, topics {prefix}*, logs {logs_dir}",
          file=sys.stderr)
    try:
        with KafkaPipeline(env, logs_dir) as pipeline:
            pipeline.start(consumers(spec.settings(common={"bus": "kafka"})))
            pipeline.wait_started()
            started = time.perf_counter()
            pipeline.ingest()
            pipeline.wait_marked(url, account, total, timeout_s=max(300.0, total / 200))
            seconds = time.perf_counter() - started
    finally:
        asyncio.run(delete_prefixed(common.kafka_bootstrap, prefix))
    return {"bus": "kafka", "candles": total, "seconds": round(seconds, 3),
            "candles_per_second": round(total / seconds) if seconds > 0 else 0}


def run(spec: BacktestSpec, *, kafka: bool, pg_dir: Path, reports: Path, mc_runs: int,
        mc_seed: int) -> tuple[dict[str, Any], dict[str, Path]]:
    settings = spec.settings(common={"bus": "inprocess"})
    total = _candles(spec)
    if total == 0:
        where = settings.ingest.data_dir or "the shared data"
        raise config.ConfigError(f"no candles for {', '.join(spec.symbols)} in "
                                 f"[{spec.start}, {spec.end}) in {where}")
    url = _database(spec, pg_dir)
    print(f"backtest {spec.run_id()}: {total:,} candles of {', '.join(spec.symbols)} "
          f"[{spec.start}, {spec.end})", file=sys.stderr)
    info = run_kafka(spec, url, total) if kafka else run_embedded(spec, url, total)
    capital = settings.ledger.initial_capital
    ledger = backtest_report.read_ledger(url, settings.ledger.account, capital)
    if len(ledger.times_ms) == 0:
        raise RuntimeError(f"the ledger marked no candle of the {total:,} replayed: a service "
                           "held them back (run with -v to see its logs)")
    about = {"run_id": spec.run_id(), "strategy": spec.strategy, "symbols": list(spec.symbols),
             "from": spec.start, "to": spec.end, "timeframe": settings.ingest.timeframe,
             "config": spec.overrides, "settings_fingerprint": spec.fingerprint(),
             "initial_capital": str(capital)}
    report = backtest_report.build_report(ledger, initial_capital=capital, about=about,
                                          mc_runs=mc_runs, mc_seed=mc_seed)
    directory = reports / spec.strategy / spec.run_id()
    paths = backtest_report.write_reports(directory, report, ledger, info)
    return report, paths


def cmd_backtest(ns: argparse.Namespace) -> int:
    logs.setup("meridian", "INFO" if ns.verbose else "WARNING")
    spec = make_spec(ns.symbols, ns.start, ns.end, ns.config)
    if ns.mc_runs < 1:
        raise config.ConfigError(f"--mc-runs must be >= 1, got {ns.mc_runs}")
    report, paths = run(spec, kafka=ns.kafka, pg_dir=Path(ns.pg_dir), reports=Path(ns.reports),
                        mc_runs=ns.mc_runs, mc_seed=ns.mc_seed)
    print()
    print(backtest_report.render(report))
    for name, path in paths.items():
        print(f"{name:<12} {path}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("backtest", help="replay a range through the real services on an "
                       "isolated run, with a report (metrics, chart, trades, Monte Carlo)")
    p.add_argument("--from", dest="start", required=True, help="first candle, UTC ISO date")
    p.add_argument("--to", dest="end", required=True, help="end (exclusive), UTC ISO date")
    p.add_argument("--symbols", help="comma-separated (default: MERIDIAN_INGEST_SYMBOLS, "
                   "else all four)")
    p.add_argument("--config", help="TOML file of settings per service ([signals], [risk], "
                   "[execution], ...)")
    p.add_argument("--kafka", action="store_true",
                   help="run the services as processes over Kafka (MERIDIAN_KAFKA_BOOTSTRAP)")
    p.add_argument("--reports", default=str(REPO / "reports"),
                   help="reports root; files go to <root>/<strategy>/<run id>/")
    p.add_argument("--mc-runs", type=int, default=1000, help="Monte Carlo resamples")
    p.add_argument("--mc-seed", type=int, default=0, help="Monte Carlo seed")
    p.add_argument("--pg-dir", default=str(REPO / ".local" / "embedded-pg"),
                   help="embedded PostgreSQL data directory (without MERIDIAN_DATABASE_URL)")
    p.add_argument("-v", "--verbose", action="store_true", help="service logs on stderr")
    p.set_defaults(func=cmd_backtest)
