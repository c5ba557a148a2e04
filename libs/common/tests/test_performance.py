"""Report statistics against numbers worked out by hand (in the comments), not re-derived."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian_common.performance import (
    HOURS_PER_YEAR,
    MS_PER_DAY,
    BacktestMetrics,
    TradeRecord,
    backtest_metrics,
    curve_stats,
    drawdown_series,
    monte_carlo,
    win_rate,
)

HOUR = 3_600_000
QUARTER_YEAR = int(91.25 * MS_PER_DAY)  # 4 of them = exactly 365 days


def trade(net_pnl: float, entry_ms: int = 0, exit_ms: int = 0, *, fees: float = 0.0,
          funding: float = 0.0, symbol: str = "BTCUSDT") -> TradeRecord:
    return TradeRecord(symbol=symbol, direction=1, entry_ms=entry_ms, exit_ms=exit_ms,
                       quantity=1.0, entry_price=100.0, exit_price=100.0 + net_pnl,
                       net_pnl=net_pnl, fees=fees, funding=funding)


# --- the old API keeps its old numbers ----------------------------------------------------------


def test_curve_stats_and_win_rate_unchanged() -> None:
    # Values recorded from the implementation before this module was extended.
    equity = [100.0, 103.0, 101.5, 99.0, 104.0, 107.0, 102.0, 108.5]
    stats = curve_stats(equity)
    assert stats.max_drawdown == pytest.approx(5 / 107)  # peak 107 -> 102
    assert stats.sharpe == pytest.approx(26.457680602422354, rel=1e-12)
    assert curve_stats(equity, bars_per_year=365).sharpe == pytest.approx(5.400651437788917,
                                                                          rel=1e-12)
    assert curve_stats([100.0, 50.0, 0.0, 10.0]).max_drawdown == 1.0
    assert curve_stats([100.0]) == curve_stats([])
    assert win_rate([1.0, -2.0, 0.0, 3.0]) == 0.5
    assert win_rate([]) == 0.0
    assert HOURS_PER_YEAR == 8760


def test_curve_stats_differs_only_by_its_leading_zero_return() -> None:
    # curve_stats counts equity[0] / equity[0] - 1 = 0 as a first return (kept for
    # compatibility); repeating the first mark gives backtest_metrics the same return list.
    equity = [100.0, 103.0, 101.5, 99.0, 104.0, 107.0, 102.0, 108.5]
    old = curve_stats(equity)
    padded = backtest_metrics(range(9), [equity[0], *equity], [], initial_capital=100.0)
    assert padded.sharpe == pytest.approx(old.sharpe, rel=1e-12)
    m = backtest_metrics(range(8), equity, [], initial_capital=100.0)
    assert m.sharpe != pytest.approx(old.sharpe)
    assert m.max_drawdown == pytest.approx(old.max_drawdown, rel=1e-12)


# --- one year, by hand ---------------------------------------------------------------------------


@pytest.fixture
def one_year() -> BacktestMetrics:
    # Five marks, a quarter (91.25 days) apart: start and end are exactly 365 days apart.
    times = [k * QUARTER_YEAR for k in range(5)]
    equity = [100.0, 120.0, 90.0, 110.0, 125.0]
    trades = [
        trade(30.0, times[0], times[1], fees=1.0, funding=0.5),
        trade(-10.0, times[1], times[2], fees=1.0, funding=-0.25),
        trade(20.0, times[2], times[3], fees=2.0),
        trade(-10.0, times[3], times[3]),  # zero-length: covers no bar
        trade(0.0, times[3], times[3]),
    ]
    return backtest_metrics(times, equity, trades, initial_capital=100.0)


def test_one_year_curve(one_year: BacktestMetrics) -> None:
    m = one_year
    assert m.final_equity == 125.0
    assert m.total_return == pytest.approx(0.25)  # 125 / 100 - 1
    assert m.cagr == pytest.approx(0.25)  # exactly one year: CAGR = total return
    assert m.max_drawdown == pytest.approx(0.25)  # peak 120 -> 90: 30 / 120
    # Underwater from the peak at bar 1 until bar 4 (125 >= 120): 3 bars = 3 quarters.
    assert m.max_drawdown_duration_bars == 3
    assert m.max_drawdown_duration_days == pytest.approx(273.75)
    assert m.calmar == pytest.approx(1.0)  # 0.25 / 0.25
    assert (m.bars, m.start_ms, m.end_ms) == (5, 0, 4 * QUARTER_YEAR)


def test_one_year_trades(one_year: BacktestMetrics) -> None:
    m = one_year
    # PnLs 30, -10, 20, -10, 0: wins 50, losses 20.
    assert m.trades == 5
    assert m.profit_factor == pytest.approx(2.5)  # 50 / 20
    assert m.win_rate == pytest.approx(0.4)  # 2 of 5 (0 is not a win)
    assert m.expectancy == pytest.approx(6.0)  # 30 / 5
    assert m.expectancy_r == pytest.approx(0.6)  # 6 / |mean loss 10|
    # deviations from 6: 24, -16, 14, -16, -6 -> squares sum 1320, / 4 = 330
    # SQN = sqrt(5) * 6 / sqrt(330) = 6 / sqrt(66) = 0.7385489...
    assert m.sqn == pytest.approx(0.7385489458759964)
    assert m.fees_paid == pytest.approx(4.0)  # 1 + 1 + 2
    assert m.funding_paid == pytest.approx(0.25)  # 0.5 - 0.25
    # Trades cover bars [0,1), [1,2), [2,3): bars 0, 1, 2 of 5.
    assert m.exposure == pytest.approx(0.6)


def test_sharpe_and_sortino_by_hand() -> None:
    # returns +20 %, -10 %: mean 0.05; stdev(ddof=1) = 0.15 * sqrt(2) = 0.2121...
    # Sharpe = 0.05 / 0.2121 * sqrt(2) = 1/3
    # downside deviation = sqrt((0 + 0.01) / 2) = 0.0707...; Sortino = 0.05/0.0707*sqrt(2) = 1
    m = backtest_metrics([0, 1, 2], [100.0, 120.0, 108.0], [], initial_capital=100.0,
                         bars_per_year=2)
    assert m.sharpe == pytest.approx(1 / 3)
    assert m.sortino == pytest.approx(1.0)


def test_sortino_none_without_a_losing_bar() -> None:
    # returns 0.1, 0, 0.1, 0: mean 0.05, stdev 0.0577 -> Sharpe with 4 bars/year = sqrt(3)
    m = backtest_metrics(range(5), [100.0, 110.0, 110.0, 121.0, 121.0], [],
                         initial_capital=100.0, bars_per_year=4)
    assert m.sharpe == pytest.approx(math.sqrt(3))
    assert m.sortino is None
    assert m.max_drawdown == 0.0


def test_longest_episode_not_deepest() -> None:
    # Deep but short dip (bars 1-2, 50 %), then a shallow long one from bar 3 to the end.
    equity = [100.0, 50.0, 100.0, 101.0, 100.0, 100.5, 100.9]
    m = backtest_metrics([k * HOUR for k in range(7)], equity, [], initial_capital=100.0)
    assert m.max_drawdown == pytest.approx(0.5)
    # Peak 101 at bar 3, never regained: bars 3 -> 6 = 3 bars = 3 hours.
    assert m.max_drawdown_duration_bars == 3
    assert m.max_drawdown_duration_days == pytest.approx(3 / 24)


def test_duration_uses_wall_time_across_a_gap() -> None:
    # Bars at 0h, 1h, 2h and 50h (data gap); peak at bar 0, recovered at bar 3.
    m = backtest_metrics([0, HOUR, 2 * HOUR, 50 * HOUR], [100.0, 90.0, 95.0, 100.0], [],
                         initial_capital=100.0)
    assert m.max_drawdown_duration_bars == 3
    assert m.max_drawdown_duration_days == pytest.approx(50 / 24)


# --- exposure ----------------------------------------------------------------------------------


def test_exposure_from_overlapping_trades() -> None:
    times = [k * HOUR for k in range(10)]
    trades = [
        trade(1.0, 2 * HOUR, 5 * HOUR),  # bars 2, 3, 4
        trade(1.0, 4 * HOUR, 7 * HOUR, symbol="ETHUSDT"),  # bars 4, 5, 6 (4 counted once)
    ]
    m = backtest_metrics(times, [100.0] * 10, trades, initial_capital=100.0)
    assert m.exposure == pytest.approx(0.5)  # bars 2..6 = 5 of 10


def test_exposure_trade_open_past_the_end_and_in_market_override() -> None:
    times = [k * HOUR for k in range(4)]
    trades = [trade(1.0, 2 * HOUR, 99 * HOUR)]  # bars 2, 3
    m = backtest_metrics(times, [100.0] * 4, trades, initial_capital=100.0)
    assert m.exposure == pytest.approx(0.5)
    flags = [True, False, False, False]
    m = backtest_metrics(times, [100.0] * 4, trades, initial_capital=100.0, in_market=flags)
    assert m.exposure == pytest.approx(0.25)


def test_explicit_fees_override_trade_sums() -> None:
    m = backtest_metrics([0, 1], [100.0, 101.0], [trade(1.0, fees=0.5)], initial_capital=100.0,
                         fees_paid=2.0, funding_paid=-1.0)
    assert (m.fees_paid, m.funding_paid) == (2.0, -1.0)


# --- edge cases --------------------------------------------------------------------------------


def test_no_trades_and_flat_curve() -> None:
    m = backtest_metrics([0, HOUR, 2 * HOUR], [100.0, 100.0, 100.0], [], initial_capital=100.0)
    assert (m.total_return, m.cagr, m.sharpe, m.max_drawdown) == (0.0, 0.0, 0.0, 0.0)
    assert (m.sortino, m.calmar, m.profit_factor, m.expectancy, m.sqn) == (None,) * 5
    assert (m.win_rate, m.exposure, m.trades, m.max_drawdown_duration_bars) == (0.0, 0.0, 0, 0)


def test_one_bar_curve_is_json_safe() -> None:
    m = backtest_metrics([1_700_000_000_000], [100.0], [], initial_capital=100.0)
    assert (m.cagr, m.sharpe, m.sortino, m.bars) == (None, 0.0, None, 1)
    data = m.to_json()
    json.dumps(data, allow_nan=False)
    assert list(data)[:3] == ["initial_capital", "final_equity", "total_return"]
    assert list(data)[-3:] == ["bars", "start_ms", "end_ms"]


def test_ruin_is_absorbing() -> None:
    # 100 -> 50 -> -10 (ruin at bar 2) -> 30 (ignored: a dead account does not come back).
    m = backtest_metrics([0, HOUR, 2 * HOUR, 3 * HOUR], [100.0, 50.0, -10.0, 30.0], [],
                         initial_capital=100.0)
    assert m.final_equity == -10.0
    assert m.total_return == pytest.approx(-1.1)
    assert m.cagr == -1.0
    assert m.max_drawdown == 1.0
    assert m.max_drawdown_duration_bars == 3  # peak at bar 0, never recovered
    # returns -0.5 and -1.0 (floored): mean -0.75, stdev sqrt(0.125)
    assert m.sharpe == pytest.approx(-0.75 / math.sqrt(0.125) * math.sqrt(HOURS_PER_YEAR))
    assert list(drawdown_series([100.0, 50.0, -10.0, 30.0])) == [0.0, 0.5, 1.0, 1.0]


def test_profit_factor_without_losses_is_null_in_json() -> None:
    m = backtest_metrics([0, 1], [100.0, 103.0], [trade(1.0), trade(2.0)], initial_capital=100.0)
    assert m.profit_factor == math.inf
    assert m.to_json()["profit_factor"] is None
    m = backtest_metrics([0, 1], [100.0, 97.0], [trade(-1.0), trade(-2.0)],
                         initial_capital=100.0)
    assert m.profit_factor == 0.0
    assert m.expectancy == pytest.approx(-1.5)
    assert m.expectancy_r == pytest.approx(-1.0)  # -1.5 / |mean loss -1.5|


def test_huge_cagr_is_null_in_json() -> None:
    m = backtest_metrics([0, HOUR], [100.0, 1e6], [], initial_capital=100.0)
    assert m.cagr == math.inf
    assert m.to_json()["cagr"] is None
    json.dumps(m.to_json(), allow_nan=False)


def test_sqn_caps_the_trade_count_at_100() -> None:
    # 200 trades alternating 1 and 3: mean 2, stdev(ddof=1) = sqrt(200/199).
    # SQN = sqrt(100) * 2 / sqrt(200/199) = 19.9499...; uncapped it would be 28.2.
    pnls = [1.0, 3.0] * 100
    m = backtest_metrics([0, 1], [100.0, 500.0], [trade(p) for p in pnls], initial_capital=100.0)
    assert m.sqn == pytest.approx(20 * math.sqrt(199 / 200))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"initial_capital": 0.0}, "initial_capital"),
        ({"initial_capital": 100.0, "bars_per_year": 0}, "bars_per_year"),
        ({"initial_capital": 100.0, "in_market": [True]}, "in_market"),
    ],
)
def test_backtest_argument_errors(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        backtest_metrics([0, 1], [100.0, 101.0], [], **kwargs)


def test_curve_errors() -> None:
    with pytest.raises(ValueError, match="times_ms"):
        backtest_metrics([0, 0], [100.0, 101.0], [], initial_capital=100.0)
    with pytest.raises(ValueError, match="times_ms"):
        backtest_metrics([0], [100.0, 101.0], [], initial_capital=100.0)
    with pytest.raises(ValueError, match="equity"):
        backtest_metrics([], [], [], initial_capital=100.0)
    with pytest.raises(ValueError, match="equity"):
        backtest_metrics([0, 1], [100.0, math.nan], [], initial_capital=100.0)
    with pytest.raises(ValueError, match="exit_ms"):
        TradeRecord("X", 1, 10, 5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0)


@given(
    steps=st.lists(st.integers(min_value=1, max_value=10 * HOUR), min_size=1, max_size=60),
    moves=st.lists(st.floats(min_value=-200.0, max_value=200.0), min_size=60, max_size=60),
)
def test_drawdown_bounds_property(steps: list[int], moves: list[float]) -> None:
    times = np.cumsum([0, *steps])
    equity = 100.0 + np.cumsum([0.0, *moves[: len(steps)]])
    m = backtest_metrics(times, equity, [], initial_capital=100.0)
    assert 0.0 <= m.max_drawdown <= 1.0
    assert 0 <= m.max_drawdown_duration_bars <= m.bars
    assert 0.0 <= m.max_drawdown_duration_days <= (times[-1] - times[0]) / MS_PER_DAY + 1e-12
    series = drawdown_series(equity)
    assert np.all((series >= 0.0) & (series <= 1.0))
    json.dumps(m.to_json(), allow_nan=False)


# --- Monte Carlo ---------------------------------------------------------------------------------

PNLS = [12.0, -5.0, 7.5, -20.0, 3.0, 15.0, -8.0, 4.0, -2.5, 9.0]


def test_monte_carlo_shuffle_by_hand() -> None:
    # Orders of (+10, -20) from 100: 100,110,90 -> DD 20/110; 100,80,90 -> DD 20/100.
    mc = monte_carlo([10.0, -20.0], 100.0, runs=200, method="shuffle", levels=(0.0, 1.0))
    assert mc.max_drawdown == pytest.approx({"p0": 20 / 110, "p100": 0.2})
    assert mc.final_return == pytest.approx({"p0": -0.1, "p100": -0.1})
    assert mc.probability_of_loss == 1.0


def test_monte_carlo_shuffle_keeps_final_return_bootstrap_does_not() -> None:
    total = sum(PNLS) / 1000.0
    shuffle = monte_carlo(PNLS, 1000.0, runs=500, method="shuffle")
    assert shuffle.final_return == pytest.approx({"p5": total, "p50": total, "p95": total})
    assert shuffle.max_drawdown["p5"] < shuffle.max_drawdown["p95"]  # path risk still varies
    boot = monte_carlo(PNLS, 1000.0, runs=500, method="bootstrap")
    assert boot.final_return["p95"] - boot.final_return["p5"] > 0.01
    assert 0.0 < boot.probability_of_loss < 1.0


def test_monte_carlo_is_deterministic_and_ordered() -> None:
    first = monte_carlo(PNLS, 1000.0, runs=300, seed=7)
    assert first == monte_carlo(PNLS, 1000.0, runs=300, seed=7)
    assert first != monte_carlo(PNLS, 1000.0, runs=300, seed=8)
    for table in (first.final_return, first.max_drawdown):
        assert list(table) == ["p5", "p50", "p95"]
        assert table["p5"] <= table["p50"] <= table["p95"]
    assert all(0.0 <= v <= 1.0 for v in first.max_drawdown.values())
    data = first.to_json()
    assert (data["method"], data["levels"]) == ("bootstrap", [0.05, 0.5, 0.95])
    json.dumps(data, allow_nan=False)


def test_monte_carlo_ruin_and_empty() -> None:
    mc = monte_carlo([-60.0, -60.0], 100.0, runs=10, method="shuffle")
    assert (mc.final_return["p50"], mc.max_drawdown["p50"]) == (-1.0, 1.0)
    empty = monte_carlo([], 100.0, runs=5)
    assert (empty.final_return["p50"], empty.probability_of_loss) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"runs": 0}, "runs"),
        ({"runs": 2.5}, "runs"),
        ({"seed": -1}, "seed"),
        ({"levels": ()}, "levels"),
        ({"levels": (0.5, 0.2)}, "levels"),
        ({"levels": (1.5,)}, "levels"),
        ({"method": "jackknife"}, "method"),
    ],
)
def test_monte_carlo_argument_errors(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        monte_carlo(PNLS, 1000.0, **kwargs)


def test_monte_carlo_input_errors() -> None:
    with pytest.raises(ValueError, match="initial_capital"):
        monte_carlo(PNLS, 0.0)
    with pytest.raises(ValueError, match="trade_pnls"):
        monte_carlo([1.0, math.inf], 100.0)
