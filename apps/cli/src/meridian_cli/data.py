"""`meridian data backfill|gaps|repair|load-csv`: market-data maintenance from the command line.

Flags override the same MERIDIAN_* variables the ingest service reads, so a command line and a
deployment configure the job identically.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from meridian_cli.progress import ProgressLine
from meridian_common import config, logs
from meridian_ingest import commands
from meridian_ingest.exchange.client import ConfigurationError, ExchangeCallError
from meridian_ingest.settings import IngestSettings

_FLAGS = {"symbols": "symbols", "timeframe": "timeframe", "start": "start", "end": "end",
          "market_type": "market_type"}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def _settings(ns: argparse.Namespace) -> tuple[config.CommonSettings, IngestSettings]:
    common_over = {"exchange": ns.exchange} if ns.exchange else {}
    ingest_over = {field: getattr(ns, flag) for flag, field in _FLAGS.items()
                   if getattr(ns, flag, None)}
    return (config.load(config.CommonSettings, **common_over),
            config.load(IngestSettings, **ingest_over))


def cmd_data(ns: argparse.Namespace) -> int:
    logs.setup("meridian", "INFO" if ns.verbose else "WARNING")
    common, settings = _settings(ns)
    try:
        return _run(ns.data_command, common, settings)
    except (ConfigurationError, ExchangeCallError) as exc:
        print(f"meridian data {ns.data_command}: {exc}", file=sys.stderr)
        return 2


def _run(command: str, common: config.CommonSettings, settings: IngestSettings) -> int:
    if command == "backfill":
        results = asyncio.run(commands.run_backfill(
            common, settings, progress=lambda symbol: ProgressLine(f"backfill {symbol}")))
        for r in results:
            span = f"{_iso(r.first_ms)} .. {_iso(r.last_ms)}" if r.first_ms is not None else "-"
            print(f"{r.symbol}: {r.candles:,} candles ({span}), {r.funding:,} funding rows")
        return 0
    if command == "gaps":
        found = commands.find_gaps(common, settings)
        for gap in found:
            print(f"{gap.symbol}\t{_iso(gap.first_missing_ms)}\t{gap.missing} missing")
        print(f"{len(found)} gap(s), {sum(g.missing for g in found)} candle(s) missing")
        return 0
    if command == "repair":
        fixed = asyncio.run(commands.run_repair(common, settings))
        for item in fixed:
            print(f"{item.gap.symbol}\t{_iso(item.gap.first_missing_ms)}\t"
                  f"recovered {item.recovered}, exchange has none for {item.still_missing}")
        recovered = sum(f.recovered for f in fixed)
        print(f"{len(fixed)} gap(s): {recovered} candle(s) recovered, "
              f"{sum(f.still_missing for f in fixed)} not available at the exchange")
        return 0
    rows = commands.load_csv(common, settings)
    print(f"{rows:,} candles loaded from CSV")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    data = sub.add_parser("data", help="market data: backfill, gaps, repair, load-csv")
    inner = data.add_subparsers(dest="data_command", required=True)
    helps = {"backfill": "fetch candles (and funding for perpetuals) over REST into the DB, "
                         "resuming from the last stored candle",
             "gaps": "list runs of missing candles in the candles table",
             "repair": "refetch every gap from the exchange and upsert what it has",
             "load-csv": "upsert the shared CSV files into the candles table"}
    for name, text in helps.items():
        cmd = inner.add_parser(name, help=text, description=text)
        cmd.add_argument("--exchange", help="ccxt exchange id (MERIDIAN_EXCHANGE)")
        cmd.add_argument("--market-type", choices=("spot", "linear"),
                         help="MERIDIAN_INGEST_MARKET_TYPE")
        cmd.add_argument("--symbols", help="comma-separated ids (MERIDIAN_INGEST_SYMBOLS)")
        cmd.add_argument("--timeframe", help="MERIDIAN_INGEST_TIMEFRAME, e.g. 1h")
        cmd.add_argument("--from", dest="start", help="UTC ISO start (MERIDIAN_INGEST_START)")
        cmd.add_argument("--to", dest="end", help="UTC ISO end, exclusive (MERIDIAN_INGEST_END)")
        cmd.add_argument("-v", "--verbose", action="store_true")
        cmd.set_defaults(func=cmd_data)
