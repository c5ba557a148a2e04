"""`meridian research funding-arb`: the walk-forward comparison of the funding-rate arbitrage
rules (improved vs baseline, or the baseline alone with --baseline) on the shared data.

Prints one progress line per window and the comparison table; writes report.json and
report.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from meridian_cli.scripts import REPO
from meridian_common.config import ConfigError

DAY_MS = 86_400_000


def _ms(value: str, flag: str) -> int:
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected a UTC ISO date, got {value!r}") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _symbols(text: str) -> list[str]:
    names = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not names:
        raise ConfigError("--symbols: give at least one symbol, e.g. BTCUSDT,ETHUSDT")
    if len(set(names)) != len(names):
        raise ConfigError(f"--symbols repeat: {text!r}")
    return names


def cmd_funding_arb(ns: argparse.Namespace) -> int:
    from meridian_common.strategy.funding_arb import FundingArbParams
    from meridian_research.funding_arb import load_symbol
    from meridian_research.funding_arb_walkforward import markdown, walk_forward

    start, end = _ms(ns.start, "--from"), _ms(ns.end, "--to")
    if start >= end:
        raise ConfigError(f"--from {ns.start} must be before --to {ns.end}")
    for flag, value in (("--train-days", ns.train_days), ("--test-days", ns.test_days)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1 day, got {value}")
    if (end - start) < (ns.train_days + ns.test_days) * DAY_MS:
        raise ConfigError(f"--from..--to spans less than --train-days + --test-days "
                          f"({ns.train_days} + {ns.test_days} days)")
    symbols = _symbols(ns.symbols)
    warmup = 10 * DAY_MS
    try:
        data = [load_symbol(s, start - warmup, end) for s in symbols]
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    variants = (False,) if ns.baseline else (False, True)
    print(f"funding-arb walk-forward: {', '.join(symbols)} {ns.start}..{ns.end}, "
          f"{ns.train_days} d train / {ns.test_days} d test, "
          f"{'baseline only' if ns.baseline else 'improved vs baseline'}", file=sys.stderr)
    report = walk_forward(data, FundingArbParams(), start, end, train_days=ns.train_days,
                          test_days=ns.test_days, variants=variants,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
    table = markdown(report)
    print(table)
    _write(Path(ns.out), report, table)
    return 0


def _write(out: Path, report: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(table)
    print(f"report: {out / 'report.json'}")


def add_parser(rsub: Any) -> None:
    p = rsub.add_parser("funding-arb", help="funding-rate arbitrage: walk-forward, improved vs "
                                            "baseline, out of sample")
    p.add_argument("--symbols", default="BTCUSDT,ETHUSDT",
                   help="comma-separated, each with a funding file (default BTCUSDT,ETHUSDT)")
    p.add_argument("--baseline", action="store_true",
                   help="run the baseline rules only (threshold entry/exit, fixed size)")
    p.add_argument("--from", dest="start", default="2022-01-01", help="UTC ISO date")
    p.add_argument("--to", dest="end", default="2024-01-01", help="UTC ISO date, exclusive")
    p.add_argument("--train-days", type=int, default=120)
    p.add_argument("--test-days", type=int, default=60)
    p.add_argument("--out", default=str(REPO / "reports" / "funding_arb" / "latest"),
                   help="directory for report.json and report.md")
    p.set_defaults(func=cmd_funding_arb)
