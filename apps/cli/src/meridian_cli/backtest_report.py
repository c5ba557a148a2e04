"""A backtest's report, read back from what the ledger wrote: the account equity curve, the closed
trades, exposure, fees and funding; the statistics and Monte Carlo intervals of
`meridian_common.performance`; the files under reports/<strategy>/<run id>/.

The ledger is the record of the run (the same tables a live account fills), so the report is
built from them and nothing the services computed is re-derived here. Every figure is a pure
function of the tables, so the same run gives byte-identical report.json, trades.json and
report.html; what differs between two runs of the same inputs (wall time, bus, candles/s) goes
to run.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from meridian_common.db import conninfo
from meridian_common.performance import TradeRecord, backtest_metrics, monte_carlo

_JSON = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


@dataclass(frozen=True, slots=True)
class LedgerRun:
    times_ms: list[int]
    equity: list[float]
    in_market: list[bool]
    trades: list[TradeRecord]
    fees_paid: Decimal
    funding_paid: Decimal
    final_equity: Decimal
    fills: int


def read_ledger(database_url: str, account: str, initial_capital: Decimal) -> LedgerRun:
    """The account curve (capital + every market's net PnL, each carried forward between its own
    marks), per-bar exposure and the closed trades, in time order. A market is exchange and
    symbol: a hedged pair holds one symbol on two venues (spot and perpetual)."""
    with psycopg.connect(conninfo(database_url)) as conn:
        marks = conn.execute(
            "select (extract(epoch from ts) * 1000)::bigint, exchange || ':' || symbol, "
            "quantity, net_pnl, fees_paid, funding_paid from equity where account = %s "
            "order by ts, symbol, exchange",
            (account,)).fetchall()
        rows = conn.execute(
            "select symbol, direction, (extract(epoch from entry_time) * 1000)::bigint, "
            "(extract(epoch from exit_time) * 1000)::bigint, quantity, entry_price, exit_price, "
            "net_pnl, fees, funding from trades where account = %s "
            "order by exit_time, symbol, entry_time", (account,)).fetchall()
        fills = conn.execute("select count(*) from fills where account = %s",
                             (account,)).fetchone()
    times: list[int] = []
    equity: list[float] = []
    exposed: list[bool] = []
    net: dict[str, Decimal] = {}
    qty: dict[str, Decimal] = {}
    fees: dict[str, Decimal] = {}
    funding: dict[str, Decimal] = {}
    for i, (ts, key, quantity, pnl, fee, paid) in enumerate(marks):
        net[key], qty[key], fees[key], funding[key] = pnl, quantity, fee, paid
        if i + 1 == len(marks) or marks[i + 1][0] != ts:
            times.append(ts)
            equity.append(float(initial_capital + sum(net.values(), Decimal(0))))
            exposed.append(any(q != 0 for q in qty.values()))
    trades = [
        TradeRecord(symbol=s, direction=1 if d == 1 else -1, entry_ms=entry, exit_ms=exit_,
                    quantity=float(q), entry_price=float(ep), exit_price=float(xp),
                    net_pnl=float(pnl), fees=float(fee), funding=float(fund))
        for s, d, entry, exit_, q, ep, xp, pnl, fee, fund in rows
    ]
    return LedgerRun(times, equity, exposed, trades, sum(fees.values(), Decimal(0)),
                     sum(funding.values(), Decimal(0)),
                     initial_capital + sum(net.values(), Decimal(0)), fills[0] if fills else 0)


def trades_json(run: LedgerRun) -> list[dict[str, Any]]:
    return [
        {"symbol": t.symbol, "side": "long" if t.direction > 0 else "short",
         "entry_ms": t.entry_ms, "exit_ms": t.exit_ms, "quantity": t.quantity,
         "entry_price": t.entry_price, "exit_price": t.exit_price, "net_pnl": t.net_pnl,
         "fees": t.fees, "funding": t.funding}
        for t in run.trades
    ]


def build_report(run: LedgerRun, *, initial_capital: Decimal, about: Mapping[str, Any],
                 mc_runs: int, mc_seed: int) -> dict[str, Any]:
    metrics = backtest_metrics(
        run.times_ms, run.equity, run.trades, initial_capital=float(initial_capital),
        in_market=run.in_market, fees_paid=float(run.fees_paid),
        funding_paid=float(run.funding_paid))
    mc = monte_carlo([t.net_pnl for t in run.trades], float(initial_capital), runs=mc_runs,
                     seed=mc_seed)
    return {
        **about,
        "final_equity": str(run.final_equity),
        "fees_paid": str(run.fees_paid),
        "funding_paid": str(run.funding_paid),
        "fills": run.fills,
        "metrics": metrics.to_json(),
        "monte_carlo": mc.to_json(),
    }


def write_reports(directory: Path, report: Mapping[str, Any], run: LedgerRun,
                  run_info: Mapping[str, Any]) -> dict[str, Path]:
    """report.json, trades.json, report.html (deterministic) and run.json (timings)."""
    from meridian_research.report_html import equity_report_html, write_report

    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name
             for name in ("report.json", "trades.json", "report.html", "run.json")}
    trades = trades_json(run)
    _write(paths["report.json"], orjson.dumps(report, option=_JSON))
    _write(paths["trades.json"], orjson.dumps(trades, option=_JSON))
    _write(paths["run.json"], orjson.dumps(run_info, option=_JSON))
    title = f"{report['strategy']} {report['run_id']}: {', '.join(report['symbols'])} " \
            f"{report['from']} .. {report['to']}"
    html = equity_report_html(run.times_ms, run.equity, title=title, metrics=report["metrics"],
                              monte_carlo=report["monte_carlo"], trades=trades)
    write_report(paths["report.html"], html)
    return paths


def _write(path: Path, data: bytes) -> None:
    """Write-then-rename: a reader never sees half a report."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data + b"\n")
    tmp.replace(path)


def render(report: Mapping[str, Any]) -> str:
    """The headline figures as text for the terminal."""
    m = report["metrics"]
    mc = report["monte_carlo"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:,.2f}"

    lines = [
        f"run {report['run_id']}  {', '.join(report['symbols'])}  "
        f"{report['from']} .. {report['to']}",
        f"equity {float(report['initial_capital']):,.2f} -> {float(report['final_equity']):,.2f}"
        f"  total return {pct(m['total_return'])}  CAGR {pct(m['cagr'])}",
        f"Sharpe {num(m['sharpe'])}  Sortino {num(m['sortino'])}  Calmar {num(m['calmar'])}  "
        f"max DD {pct(m['max_drawdown'])} over {num(m['max_drawdown_duration_days'])} days",
        f"trades {m['trades']}  win rate {pct(m['win_rate'])}  profit factor "
        f"{num(m['profit_factor'])}  expectancy {num(m['expectancy'])}  SQN {num(m['sqn'])}  "
        f"exposure {pct(m['exposure'])}",
        f"fees {float(report['fees_paid']):,.2f}  funding {float(report['funding_paid']):,.2f}",
    ]
    fr, dd = mc.get("final_return", {}), mc.get("max_drawdown", {})
    if fr:
        lines.append(f"Monte Carlo ({mc['runs']} runs): return {', '.join(f'{k} {pct(v)}' for k, v in fr.items())}; "  # noqa: E501
                     f"max DD {', '.join(f'{k} {pct(v)}' for k, v in dd.items())}")
    return "\n".join(lines)
