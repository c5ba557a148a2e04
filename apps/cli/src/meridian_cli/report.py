"""Run report from the ledger's tables: per symbol and total, as a table and as JSON.

Per-symbol figures treat each symbol as if it alone traded the initial capital (equity =
capital + that symbol's net PnL); the total is capital + the sum over symbols at every hour,
each symbol's PnL carried forward between its own marks. Definitions: meridian_common.performance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import psycopg

from meridian_common.db import conninfo
from meridian_common.performance import curve_stats, win_rate


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    trades: int
    win_rate: float
    net_pnl: Decimal
    fees: Decimal
    max_drawdown: float
    sharpe: float


def build(database_url: str, account: str, initial_capital: Decimal) -> dict[str, Any]:
    with psycopg.connect(conninfo(database_url)) as conn:
        trades = conn.execute(
            "select symbol, net_pnl from trades where account = %s order by symbol, entry_time",
            (account,)).fetchall()
        curve = conn.execute(
            "select symbol, (extract(epoch from ts) * 1000)::bigint, net_pnl, fees_paid "
            "from equity where account = %s order by ts, symbol", (account,)).fetchall()
        fills = conn.execute("select count(*) from fills where account = %s",
                             (account,)).fetchone()
    symbols = sorted({row[0] for row in curve})
    per_symbol_curve: dict[str, list[float]] = {s: [] for s in symbols}
    latest: dict[str, Decimal] = {}
    latest_fees: dict[str, Decimal] = {}
    total_curve: list[float] = []
    capital = float(initial_capital)
    last_ts = None
    for symbol, ts, net, fees in curve:
        if last_ts is not None and ts != last_ts:
            total_curve.append(float(initial_capital + sum(latest.values(), Decimal(0))))
        latest[symbol] = net
        latest_fees[symbol] = fees
        per_symbol_curve[symbol].append(capital + float(net))
        last_ts = ts
    if last_ts is not None:
        total_curve.append(float(initial_capital + sum(latest.values(), Decimal(0))))
    lines = []
    for symbol in symbols:
        pnls = [float(p) for s, p in trades if s == symbol]
        stats = curve_stats(per_symbol_curve[symbol])
        lines.append(Line(symbol, len(pnls), win_rate(pnls), latest[symbol], latest_fees[symbol],
                          stats.max_drawdown, stats.sharpe))
    all_pnls = [float(p) for _, p in trades]
    total_stats = curve_stats(total_curve)
    total = Line("TOTAL", len(all_pnls), win_rate(all_pnls), sum(latest.values(), Decimal(0)),
                 sum(latest_fees.values(), Decimal(0)), total_stats.max_drawdown,
                 total_stats.sharpe)
    return {
        "account": account,
        "initial_capital": str(initial_capital),
        "final_equity": str(initial_capital + total.net_pnl),
        "fills": fills[0] if fills else 0,
        "bars": len(total_curve),
        "symbols": [_line_json(line) for line in lines],
        "total": _line_json(total),
    }


def _line_json(line: Line) -> dict[str, Any]:
    out = asdict(line)
    out["net_pnl"] = str(line.net_pnl)
    out["fees"] = str(line.fees)
    return out


def render(report: dict[str, Any]) -> str:
    header = f"{'symbol':<10}{'trades':>8}{'win rate':>10}{'net PnL':>14}{'fees':>12}" \
             f"{'max DD':>9}{'Sharpe':>8}"
    rows = [header, "-" * len(header)]
    for line in [*report["symbols"], report["total"]]:
        if line["name"] == "TOTAL":
            rows.append("-" * len(header))
        rows.append(
            f"{line['name']:<10}{line['trades']:>8}{line['win_rate']:>10.1%}"
            f"{float(line['net_pnl']):>14,.2f}{float(line['fees']):>12,.2f}"
            f"{line['max_drawdown']:>9.1%}{line['sharpe']:>8.2f}")
    rows.append(f"initial capital {float(report['initial_capital']):,.2f} -> final equity "
                f"{float(report['final_equity']):,.2f} ({report['fills']} fills)")
    return "\n".join(rows)
