"""Walk-forward comparison of the improved funding-arbitrage rules against the baseline.

Each rolling window (`meridian_research.walkforward.rolling_windows`): for EACH variant the
train part picks the thresholds (entry_rate x exit_rate from the same small grid) by the same
objective -- the train part's total return net of every cost -- and the pick is then run on the
test part, which it has never seen. Test parts tile the span, so the compounded test returns
are one continuous out-of-sample history per variant; its max drawdown is taken over the
chained test equity curves.

Honest limits, repeated in the report: the basis is modelled (a cost per entry and exit tied to
the funding rate), not observed -- the shared data has no perpetual prices; the predicted rate
is the last settled one; a symbol trades only where its funding file has settlements (ETH from
2023-01-01).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from meridian_common.strategy.funding_arb import FundingArbParams
from meridian_research.funding_arb import Costs, FundingArbResult, SymbolData, run_backtest
from meridian_research.walkforward import Window, rolling_windows

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "entry_rate": (0.00005, 0.0001, 0.00015),
    "exit_rate": (0.0, 0.00003),
}
BASIS_NOTE = ("basis (perp - spot) is MODELLED, not observed: no perpetual price series in the "
              "shared data; each entry and exit pays notional x (basis_bps/1e4 + "
              "basis_rate_multiple x |predicted rate|)")
PREDICTION_NOTE = ("predicted next funding = the last settled rate (information available at "
                   "the decision); no settlement is used before its time")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One variant on one test part, with the thresholds its train part chose."""

    chosen: dict[str, float]
    train_return: float
    total_return: float
    max_drawdown: float
    trades: int
    fees: float
    funding: float
    basis: float
    equity: tuple[float, ...]  # the capital, then the mark after each settlement and the end

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        del out["equity"]
        return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _combos(grid: dict[str, Sequence[float]]) -> list[dict[str, float]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


def _valid(params: FundingArbParams, combo: dict[str, float]) -> FundingArbParams | None:
    try:
        return replace(params, **combo)  # type: ignore[arg-type]
    except ValueError:
        return None  # e.g. exit_rate >= entry_rate: not a candidate


def _tradable(data: Sequence[SymbolData], start: int, end: int) -> list[SymbolData]:
    return [d for d in data if any(start <= t < end for t in d.settle_ms)]


def _run(data: Sequence[SymbolData], params: FundingArbParams, start: int, end: int,
         costs: Costs, capital: Decimal) -> FundingArbResult | None:
    live = _tradable(data, start, end)
    return run_backtest(live, params, start, end, costs=costs, capital=capital) if live else None


def choose(data: Sequence[SymbolData], params: FundingArbParams, window: Window,
           grid: dict[str, Sequence[float]], costs: Costs,
           capital: Decimal) -> tuple[FundingArbParams, dict[str, float], float]:
    """The grid point with the best train-part total return (first one on ties)."""
    best: tuple[FundingArbParams, dict[str, float], float] | None = None
    for combo in _combos(grid):
        candidate = _valid(params, combo)
        if candidate is None:
            continue
        result = _run(data, candidate, window.train_start, window.train_end, costs, capital)
        score = result.metrics.total_return if result is not None else 0.0
        if best is None or score > best[2]:
            best = (candidate, combo, score)
    if best is None:
        raise ValueError(f"no valid grid point in {grid}")
    return best


def evaluate(data: Sequence[SymbolData], params: FundingArbParams, window: Window,
             grid: dict[str, Sequence[float]], costs: Costs, capital: Decimal) -> Outcome:
    chosen, combo, train_return = choose(data, params, window, grid, costs, capital)
    result = _run(data, chosen, window.test_start, window.test_end, costs, capital)
    if result is None:
        return Outcome(combo, train_return, 0.0, 0.0, 0, 0.0, 0.0, 0.0, (float(capital),))
    m = result.metrics
    return Outcome(combo, train_return, m.total_return, m.max_drawdown, m.trades,
                   float(result.fees), float(result.funding), float(result.basis),
                   (float(capital), *(float(e) for e in result.equity)))


def _chain(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Totals of the chained test parts: compounded return and the chained drawdown."""
    growth, peak, worst = 1.0, 1.0, 0.0
    for o in outcomes:
        first = o.equity[0]
        for value in o.equity:
            level = growth * value / first
            peak = max(peak, level)
            worst = max(worst, (peak - level) / peak)
        growth *= 1.0 + o.total_return
    return {"total_return": growth - 1.0, "max_drawdown": worst,
            "trades": sum(o.trades for o in outcomes), "fees": sum(o.fees for o in outcomes),
            "funding": sum(o.funding for o in outcomes), "basis": sum(o.basis for o in outcomes),
            "windows_positive": sum(1 for o in outcomes if o.total_return > 0)}


def walk_forward(data: Sequence[SymbolData], params: FundingArbParams, start_ms: int, end_ms: int,
                 *, train_days: int = 120, test_days: int = 60,
                 grid: dict[str, Sequence[float]] | None = None, costs: Costs | None = None,
                 capital: Decimal = Decimal(100_000), variants: Sequence[bool] = (False, True),
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The comparison report (JSON-able): per window and variant the chosen thresholds and the
    out-of-sample figures, then the chained totals per variant and improved-vs-baseline."""
    grid = grid or DEFAULT_GRID
    costs = costs or Costs()
    day = 86_400_000
    windows = rolling_windows(start_ms, end_ms, train=train_days * day, test=test_days * day)
    names = {False: "baseline", True: "improved"}
    rows: list[dict[str, Any]] = []
    per_variant: dict[str, list[Outcome]] = {names[v]: [] for v in variants}
    for w in windows:
        row: dict[str, Any] = {"window": w.index, "train": [_iso(w.train_start), _iso(w.train_end)],
                               "test": [_iso(w.test_start), _iso(w.test_end)]}
        for v in variants:
            outcome = evaluate(data, replace(params, improved=v), w, grid, costs, capital)
            per_variant[names[v]].append(outcome)
            row[names[v]] = outcome.summary()
        rows.append(row)
        if progress is not None:
            progress(f"window {w.index + 1}/{len(windows)} {w.label()}: " + ", ".join(
                f"{n} {row[n]['total_return']:+.3%}" for n in per_variant))
    totals = {name: _chain(outs) for name, outs in per_variant.items()}
    return {"symbols": [d.symbol for d in data], "start": _iso(start_ms), "end": _iso(end_ms),
            "train_days": train_days, "test_days": test_days,
            "grid": {k: list(v) for k, v in grid.items()}, "capital": str(capital),
            "params": _params_json(params), "costs": _costs_json(costs),
            "windows": rows, "totals": totals, "comparison": _compare(totals),
            "notes": [BASIS_NOTE, PREDICTION_NOTE]}


def _compare(totals: dict[str, dict[str, float]]) -> dict[str, float | None]:
    if set(totals) != {"baseline", "improved"}:
        return {}
    b, i = totals["baseline"], totals["improved"]

    def ratio(key: str) -> float | None:
        return i[key] / b[key] if b[key] else None
    return {"return_difference": i["total_return"] - b["total_return"],
            "fees_ratio": ratio("fees"), "funding_ratio": ratio("funding"),
            "trades_ratio": ratio("trades"), "max_drawdown_ratio": ratio("max_drawdown")}


def _params_json(params: FundingArbParams) -> dict[str, Any]:
    out = asdict(params)
    out["drawdown_steps"] = [[str(a), str(b)] for a, b in params.drawdown_steps]
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in out.items()}


def _costs_json(costs: Costs) -> dict[str, str]:
    return {"spot_maker": str(costs.spot.fees.maker), "spot_taker": str(costs.spot.fees.taker),
            "perp_maker": str(costs.perp.fees.maker), "perp_taker": str(costs.perp.fees.taker),
            "spot_slippage_bps": str(costs.spot.slippage_bps),
            "perp_slippage_bps": str(costs.perp.slippage_bps),
            "basis_bps": str(costs.basis_bps),
            "basis_rate_multiple": str(costs.basis_rate_multiple),
            "borrow_rate": str(costs.borrow_rate)}


def markdown(report: dict[str, Any]) -> str:
    """A short table: per window OOS return per variant, then the chained totals."""
    variants = list(report["totals"])
    head = "| window | test | " + " | ".join(f"{v} OOS return | {v} trades" for v in variants)
    lines = [head + " |", "|" + "---|" * (2 + 2 * len(variants))]
    for row in report["windows"]:
        cells = " | ".join(f"{row[v]['total_return']:+.3%} | {row[v]['trades']}"
                           for v in variants)
        lines.append(f"| {row['window']} | {row['test'][0]}..{row['test'][1]} | {cells} |")
    lines += ["", "| variant | OOS return | max DD | trades | fees | funding | basis | "
              "positive windows |", "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        t = report["totals"][v]
        lines.append(f"| {v} | {t['total_return']:+.3%} | {t['max_drawdown']:.3%} | "
                     f"{t['trades']} | {t['fees']:,.2f} | {t['funding']:,.2f} | "
                     f"{t['basis']:,.2f} | {t['windows_positive']}/{len(report['windows'])} |")
    lines += ["", *(f"- {n}" for n in report["notes"])]
    return "\n".join(lines) + "\n"
