"""Performance statistics of an equity curve and a list of trades.

Every report (CLI, ML evaluation, research HTML) quotes these numbers, so the definitions live
here, once, and nowhere else:

Curve (one equity mark per bar, bar times in UTC epoch ms, strictly increasing):
- return of bar i = equity[i] / equity[i-1] - 1 (simple, per bar);
- Sharpe = mean(returns) / stdev(returns, ddof=1) * sqrt(bars per year), risk-free rate 0;
  0.0 when there are fewer than 2 returns or the stdev is 0 (the legacy `curve_stats` also
  counts a 0 return for bar 0, see there);
- Sortino = mean(returns) / DD * sqrt(bars per year), DD = sqrt(mean(min(r, 0)^2)) over ALL
  bars (target 0); None when there is no return or no losing bar (ratio undefined);
- total return = final equity / initial capital - 1;
- CAGR = (final / initial) ^ (1 / years) - 1 with years = (end_ms - start_ms) / 365 days of
  wall time (calendar time, so data gaps do not shorten the year); None for a zero-length
  curve, -1.0 when the final equity is <= 0, inf (JSON null) when it overflows;
- drawdown = fraction below the running peak, in [0, 1]; max drawdown = its maximum;
- max drawdown duration = the LONGEST underwater episode (not the duration of the deepest one):
  from the bar of the peak to the first bar back at or above that peak, or to the last bar
  if it never recovered; given in bars and in wall-time days;
- Calmar = CAGR / max drawdown; None when there is no drawdown or no CAGR;
- exposure = fraction of bars with an open position: from `in_market` flags when given, else
  bar i counts when some trade has entry_ms <= time[i] < exit_ms.

Ruin: the first bar with equity <= 0 ends the account. It is absorbing: returns stop there
(that bar's return is floored at -100 %), the drawdown is 100 % from then on and never
recovers (the duration runs to the last bar), the final equity is the equity AT that bar
(it may be negative: a loss beyond the capital is real) and later marks are ignored.

Trades (closed round trips, net PnL after fees and funding, quote currency):
- win rate = trades with net PnL > 0 / trades (0.0 without trades, as it always was);
- profit factor = sum of winning PnLs / |sum of losing PnLs|; inf (JSON null) when there are
  wins but no loss, 0.0 with losses but no win, None without trades or when every PnL is 0;
- expectancy = mean net PnL per trade; expectancy_r = expectancy / |mean losing PnL|
  (trades carry no stop, so 1 R is taken as the average loss; None without a loss);
- SQN (Van Tharp) = sqrt(min(n, 100)) * mean(PnL) / stdev(PnL, ddof=1); the trade count is
  capped at 100 so that long backtests are not rewarded for their length alone; None for
  fewer than 2 trades or a zero stdev.
Statistics that need trades are None without trades; nothing raises for an empty trade list
or a one-bar curve.

Monte Carlo (`monte_carlo`): trade PnLs re-ordered ("shuffle") or resampled with replacement
("bootstrap", default) into equity paths; what each can and cannot tell is in its docstring.

JSON: `to_json()` maps NaN and +-inf to None so that the output is strict JSON.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

HOURS_PER_YEAR = 24 * 365
MS_PER_DAY = 86_400_000
MS_PER_YEAR = 365 * MS_PER_DAY
SQN_TRADE_CAP = 100

FloatArray = NDArray[np.float64]
JsonScalar = float | int | str | None
MonteCarloMethod = Literal["shuffle", "bootstrap"]
MONTE_CARLO_METHODS: tuple[str, ...] = ("shuffle", "bootstrap")


@dataclass(frozen=True, slots=True)
class CurveStats:
    max_drawdown: float
    sharpe: float


def curve_stats(equity: Sequence[float], bars_per_year: int = HOURS_PER_YEAR) -> CurveStats:
    """Kept bit-for-bit as it was: the CLI and ML reports compare runs against older numbers.

    Two known differences from the module definitions, kept for compatibility: it counts a
    return of 0 for the first bar (equity[0] / equity[0] - 1), which pulls its Sharpe towards 0
    by about 1/n, and it does not treat ruin as absorbing. Its max drawdown equals
    `backtest_metrics` for a curve that stays positive.
    """
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


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One closed round trip; `net_pnl` already includes `fees` and `funding`."""

    symbol: str
    direction: int  # +1 long, -1 short
    entry_ms: int
    exit_ms: int
    quantity: float
    entry_price: float
    exit_price: float
    net_pnl: float  # after fees and funding
    fees: float
    funding: float  # paid (+) / received (-)

    def __post_init__(self) -> None:
        # A reversed interval would silently subtract from the exposure count.
        if self.direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {self.direction!r}")
        if self.exit_ms < self.entry_ms:
            raise ValueError(f"exit_ms ({self.exit_ms}) is before entry_ms ({self.entry_ms})")


def _json_safe(value: object) -> JsonScalar:
    """Strict JSON has no NaN/inf; numpy scalars are unwrapped so json.dumps accepts them."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class BacktestMetrics:
    """Headline numbers of one backtest; definitions in the module docstring."""

    initial_capital: float
    final_equity: float
    total_return: float
    cagr: float | None
    sharpe: float
    sortino: float | None
    calmar: float | None
    max_drawdown: float
    max_drawdown_duration_bars: int
    max_drawdown_duration_days: float
    profit_factor: float | None
    win_rate: float
    expectancy: float | None
    expectancy_r: float | None
    sqn: float | None
    exposure: float
    trades: int
    fees_paid: float
    funding_paid: float
    bars: int
    start_ms: int
    end_ms: int

    def to_json(self) -> dict[str, float | int | None]:
        """Field order is the declaration order, so diffs of stored reports stay readable."""
        return {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _float_array(values: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must contain only finite numbers")
    return array


def _positive(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _bar_times(times_ms: ArrayLike, bars: int) -> NDArray[np.int64]:
    times = np.asarray(times_ms, dtype=np.int64)
    if times.ndim != 1 or len(times) != bars:
        raise ValueError(f"times_ms must have one entry per equity bar ({bars}), got {times.shape}")
    if bars > 1 and not np.all(np.diff(times) > 0):
        raise ValueError("times_ms must be strictly increasing")
    return times


# ---------------------------------------------------------------------------------------------
# Curve statistics


def _ruin_index(equity: FloatArray) -> int | None:
    hits = np.flatnonzero(equity <= 0)
    return int(hits[0]) if len(hits) else None


def _absorb_ruin(equity: FloatArray) -> FloatArray:
    """Zero from the first non-positive mark on: a dead account does not come back."""
    ruin = _ruin_index(equity)
    if ruin is None:
        return equity
    absorbed = equity.copy()
    absorbed[ruin:] = 0.0
    return absorbed


def drawdown_series(equity: ArrayLike) -> FloatArray:
    """Fraction below the running peak per bar, in [0, 1], with ruin absorbing (docstring).

    Bars before the curve ever had positive equity have no peak to fall from and count as 0.
    """
    values = _absorb_ruin(_float_array(equity, "equity"))
    if len(values) == 0:
        return values
    peak = np.maximum.accumulate(values)
    safe_peak = np.where(peak > 0, peak, 1.0)
    drawdown = np.where(peak > 0, (peak - values) / safe_peak, 0.0)
    return np.clip(drawdown, 0.0, 1.0)


def _longest_underwater(times: NDArray[np.int64], drawdown: FloatArray) -> tuple[int, float]:
    """(bars, days) of the longest episode by wall time; recovery bar included, see docstring."""
    under = drawdown > 0
    if not under.any():
        return 0, 0.0
    n = len(drawdown)
    index = np.arange(n)
    # Index of the bar that set the running peak; bar 0 is never underwater.
    peak_index = np.maximum.accumulate(np.where(under, 0, index))
    run_ends = np.flatnonzero(under & ~np.append(under[1:], False))
    starts = peak_index[run_ends]
    stops = np.minimum(run_ends + 1, n - 1)  # the recovery bar, or the last bar if none
    spans = times[stops] - times[starts]
    k = int(np.argmax(spans))
    return int(stops[k] - starts[k]), float(spans[k]) / MS_PER_DAY


def _bar_returns(equity: FloatArray) -> FloatArray:
    ruin = _ruin_index(equity)
    live = equity if ruin is None else equity[: ruin + 1]
    if len(live) < 2:
        return np.empty(0)
    return np.maximum(live[1:], 0.0) / live[:-1] - 1.0


def _sharpe_sortino(returns: FloatArray, bars_per_year: float) -> tuple[float, float | None]:
    scale = math.sqrt(bars_per_year)
    if len(returns) == 0:
        return 0.0, None
    mean = float(np.mean(returns))
    stdev = float(np.std(returns, ddof=1)) if len(returns) > 1 else 0.0
    sharpe = mean / stdev * scale if stdev > 0 else 0.0
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    sortino = mean / downside * scale if downside > 0 else None
    return sharpe, sortino


def _cagr(initial: float, final: float, elapsed_ms: int) -> float | None:
    if elapsed_ms <= 0:
        return None
    if final <= 0:
        return -1.0
    years = elapsed_ms / MS_PER_YEAR
    try:
        return math.exp(math.log(final / initial) / years) - 1.0
    except OverflowError:  # e.g. +10 % in one hour annualised
        return math.inf


# ---------------------------------------------------------------------------------------------
# Trade statistics


@dataclass(frozen=True, slots=True)
class _TradeStats:
    profit_factor: float | None
    win_rate: float
    expectancy: float | None
    expectancy_r: float | None
    sqn: float | None


def _profit_factor(pnls: FloatArray) -> float | None:
    wins = float(pnls[pnls > 0].sum())
    losses = -float(pnls[pnls < 0].sum())
    if losses > 0:
        return wins / losses
    return math.inf if wins > 0 else None


def _sqn(pnls: FloatArray) -> float | None:
    if len(pnls) < 2:
        return None
    stdev = float(np.std(pnls, ddof=1))
    if stdev == 0:
        return None
    return math.sqrt(min(len(pnls), SQN_TRADE_CAP)) * float(np.mean(pnls)) / stdev


def _trade_stats(pnls: FloatArray) -> _TradeStats:
    if len(pnls) == 0:
        return _TradeStats(None, 0.0, None, None, None)
    expectancy = float(np.mean(pnls))
    losers = pnls[pnls < 0]
    expectancy_r = expectancy / abs(float(np.mean(losers))) if len(losers) else None
    rate = float(np.count_nonzero(pnls > 0)) / len(pnls)
    return _TradeStats(_profit_factor(pnls), rate, expectancy, expectancy_r, _sqn(pnls))


def _exposure(
    times: NDArray[np.int64], trades: Sequence[TradeRecord], in_market: ArrayLike | None
) -> float:
    bars = len(times)
    if in_market is not None:
        flags = np.asarray(in_market, dtype=bool)
        if flags.shape != (bars,):
            raise ValueError(f"in_market must have one flag per bar ({bars}), got {flags.shape}")
        return float(np.count_nonzero(flags)) / bars
    if not trades:
        return 0.0
    # +1 at the first bar inside a trade, -1 at the first bar after it; overlapping trades
    # (several symbols) count a bar once.
    entries = np.searchsorted(times, [t.entry_ms for t in trades], side="left")
    exits = np.searchsorted(times, [t.exit_ms for t in trades], side="left")
    delta = np.zeros(bars + 1, dtype=np.int64)
    np.add.at(delta, entries, 1)
    np.add.at(delta, exits, -1)
    return float(np.count_nonzero(np.cumsum(delta[:-1]) > 0)) / bars


def _total(given: float | None, per_trade: list[float]) -> float:
    return float(sum(per_trade) if given is None else given)


# ---------------------------------------------------------------------------------------------
# Public entry point


def backtest_metrics(
    times_ms: ArrayLike,
    equity: ArrayLike,
    trades: Sequence[TradeRecord],
    *,
    initial_capital: float,
    in_market: ArrayLike | None = None,
    fees_paid: float | None = None,
    funding_paid: float | None = None,
    bars_per_year: float = HOURS_PER_YEAR,
) -> BacktestMetrics:
    """All headline statistics of one backtest, with the definitions of the module docstring.

    `equity[0]` must be positive: a curve that starts ruined has no return to measure.
    `fees_paid`/`funding_paid` default to the sums over `trades`; pass them when the ledger
    also charged costs outside closed trades (e.g. a position still open at the end).
    """
    capital = _positive(initial_capital, "initial_capital")
    per_year = _positive(bars_per_year, "bars_per_year")
    values = _float_array(equity, "equity")
    if len(values) == 0:
        raise ValueError("equity must have at least one bar")
    if values[0] <= 0:
        raise ValueError(f"equity[0] must be > 0, got {values[0]}")
    times = _bar_times(times_ms, len(values))

    ruin = _ruin_index(values)
    final = float(values[-1] if ruin is None else values[ruin])
    drawdown = drawdown_series(values)
    max_dd = float(drawdown.max())
    dd_bars, dd_days = _longest_underwater(times, drawdown)
    sharpe, sortino = _sharpe_sortino(_bar_returns(values), per_year)
    cagr = _cagr(capital, final, int(times[-1] - times[0]))
    calmar = cagr / max_dd if cagr is not None and max_dd > 0 else None

    pnls = _float_array([t.net_pnl for t in trades], "trades[].net_pnl")
    stats = _trade_stats(pnls)
    return BacktestMetrics(
        initial_capital=capital,
        final_equity=final,
        total_return=final / capital - 1.0,
        cagr=cagr,
        sharpe=sharpe,
        sortino=sortino,
        calmar=calmar,
        max_drawdown=max_dd,
        max_drawdown_duration_bars=dd_bars,
        max_drawdown_duration_days=dd_days,
        profit_factor=stats.profit_factor,
        win_rate=stats.win_rate,
        expectancy=stats.expectancy,
        expectancy_r=stats.expectancy_r,
        sqn=stats.sqn,
        exposure=_exposure(times, trades, in_market),
        trades=len(trades),
        fees_paid=_total(fees_paid, [t.fees for t in trades]),
        funding_paid=_total(funding_paid, [t.funding for t in trades]),
        bars=len(values),
        start_ms=int(times[0]),
        end_ms=int(times[-1]),
    )


# ---------------------------------------------------------------------------------------------
# Monte Carlo


@dataclass(frozen=True, slots=True)
class MonteCarlo:
    """Quantiles over simulated equity paths; see `monte_carlo` for what they can tell."""

    runs: int
    seed: int
    method: str
    levels: tuple[float, ...]
    final_return: dict[str, float]  # quantile label ("p5", "p50", "p95") -> value
    max_drawdown: dict[str, float]
    probability_of_loss: float

    def to_json(self) -> dict[str, object]:
        def clean(table: dict[str, float]) -> dict[str, JsonScalar]:
            return {label: _json_safe(value) for label, value in table.items()}

        return {
            "method": self.method,
            "runs": self.runs,
            "seed": self.seed,
            "levels": [float(level) for level in self.levels],
            "final_return": clean(self.final_return),
            "max_drawdown": clean(self.max_drawdown),
            "probability_of_loss": _json_safe(self.probability_of_loss),
        }


def quantile_label(level: float) -> str:
    """0.05 -> "p5", 0.025 -> "p2.5": the key reports use for a quantile level."""
    return f"p{level * 100:g}"


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    checked = tuple(float(level) for level in levels)
    if not checked:
        raise ValueError("levels must not be empty")
    if any(not 0.0 <= level <= 1.0 for level in checked):
        raise ValueError(f"levels must lie in [0, 1], got {checked}")
    if any(b <= a for a, b in itertools.pairwise(checked)):
        raise ValueError(f"levels must be strictly increasing, got {checked}")
    if len({quantile_label(level) for level in checked}) != len(checked):
        raise ValueError(f"levels are too close to label apart: {checked}")
    return checked


def _check_count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _sample_pnls(
    pnls: FloatArray, runs: int, rng: np.random.Generator, method: str
) -> FloatArray:
    if len(pnls) == 0:
        return np.zeros((runs, 0))
    if method == "shuffle":
        return rng.permuted(np.tile(pnls, (runs, 1)), axis=1)
    return pnls[rng.integers(0, len(pnls), size=(runs, len(pnls)))]


def _paths(samples: FloatArray, capital: float) -> FloatArray:
    """Capital first, then capital + running PnL; ruin absorbing (zero) per row."""
    start = np.full((samples.shape[0], 1), capital)
    paths = np.hstack([start, capital + np.cumsum(samples, axis=1)])
    ruined = np.logical_or.accumulate(paths <= 0, axis=1)
    return np.where(ruined, 0.0, paths)


def monte_carlo(
    trade_pnls: ArrayLike,
    initial_capital: float,
    *,
    runs: int = 1000,
    seed: int = 0,
    levels: Sequence[float] = (0.05, 0.5, 0.95),
    method: MonteCarloMethod = "bootstrap",
) -> MonteCarlo:
    """Spread of final return and max drawdown under re-drawn trade sequences.

    Each run rebuilds an equity path `capital + cumsum(pnls)` from the closed trades' net
    PnLs, added in quote currency (fixed size, no compounding), with ruin absorbing.

    - "shuffle": every run is a permutation of the SAME trades. It answers "how bad could the
      drawdown have been with these trades in another order" (path risk). It cannot say
      anything about the final return: a sum does not depend on order, so its interval
      collapses to one value and the probability of loss is 0 or 1.
    - "bootstrap" (default): every run draws n trades WITH replacement, so both the final
      return and the drawdown vary; it is the one that gives a confidence interval of the
      result. That is why it is the default.
    Neither can see what the trade list does not contain: both assume trades are independent
    and identically distributed (no regime changes, no serial correlation of wins/losses), so
    the intervals are optimistic for strategies whose edge depends on market regime.

    Memory is one (runs x trades) float array: 1000 runs x 10,000 trades is about 80 MB.
    Same inputs and seed give identical results (numpy PCG64).
    """
    pnls = _float_array(trade_pnls, "trade_pnls")
    capital = _positive(initial_capital, "initial_capital")
    runs = _check_count(runs, "runs", 1)
    seed = _check_count(seed, "seed", 0)
    checked_levels = _check_levels(levels)
    if method not in MONTE_CARLO_METHODS:
        raise ValueError(f"method must be one of {MONTE_CARLO_METHODS}, got {method!r}")

    rng = np.random.Generator(np.random.PCG64(seed))
    paths = _paths(_sample_pnls(pnls, runs, rng, method), capital)
    final_return = paths[:, -1] / capital - 1.0
    peaks = np.maximum.accumulate(paths, axis=1)  # >= capital > 0
    max_drawdown = np.max((peaks - paths) / peaks, axis=1)

    def table(samples: FloatArray) -> dict[str, float]:
        values = np.quantile(samples, checked_levels)
        return {quantile_label(lv): float(v) for lv, v in zip(checked_levels, values, strict=True)}

    return MonteCarlo(
        runs=runs,
        seed=seed,
        method=method,
        levels=checked_levels,
        final_return=table(final_return),
        max_drawdown=table(max_drawdown),
        probability_of_loss=float(np.mean(final_return < 0)),
    )
