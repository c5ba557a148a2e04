"""Performance statistics of an equity curve and a list of trades.

Definitions (stated once, used by every report):
- returns are per bar (hourly for the shared data) from the equity curve;
- Sharpe = mean(return) / stdev(return) * sqrt(bars per year), risk-free rate 0;
- max drawdown = largest fall from a running peak, as a fraction of that peak;
- win rate = closed trades with net PnL > 0 (fees included) / closed trades.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOURS_PER_YEAR = 24 * 365


@dataclass(frozen=True, slots=True)
class CurveStats:
    max_drawdown: float
    sharpe: float


def curve_stats(equity: Sequence[float], bars_per_year: int = HOURS_PER_YEAR) -> CurveStats:
    if len(equity) < 2:
        return CurveStats(0.0, 0.0)
    peak = equity[0]
    worst = 0.0
    returns = []
    prev = equity[0]
    for value in equity:
        if value > peak:
            peak = value
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
        if prev > 0:
            returns.append(value / prev - 1.0)
        prev = value
    n = len(returns)
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1) if n > 1 else 0.0
    sharpe = mean / math.sqrt(var) * math.sqrt(bars_per_year) if var > 0 else 0.0
    return CurveStats(worst, sharpe)


def win_rate(net_pnls: Sequence[float]) -> float:
    return sum(1 for p in net_pnls if p > 0) / len(net_pnls) if net_pnls else 0.0
