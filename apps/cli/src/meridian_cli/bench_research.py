"""`make bench` research figures: a peer engine, raw vectorbt and our sweep on the same data.

1. The same EMA-cross strategy (20/50 on the close, long only, next-open fills, 0.1 % fees,
   1000 quote per trade) run by backtrader (an event-driven peer) and by vectorbt on the
   libs/common EMAs: both must find the same trades (count and entry bars) before either figure
   counts.
2. The research sweep: `TrendFactory` + `simulate` over a parameter grid of the four symbols,
   candles x combinations per second, next to raw vectorbt doing an EMA-cross grid of the same
   size on the same frame (its own indicators and `from_signals` only): the price of running the
   shared rules, barriers, funding and liquidation checks instead of a bare cross. Numba's
   first-call compile is measured apart and left out of both.
The replay backtest's candles/s (in-process and over Kafka) are the pipeline lines printed by
`meridian bench` before this; they are put against backtrader's here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

FAST, SLOW, NOTIONAL, FEE = 20, 50, 1000.0, 0.001


def _frame(symbol: str) -> pd.DataFrame:
    from meridian_research.data import load_wide

    w = load_wide((symbol,))
    df = pd.DataFrame({k: getattr(w, k)[symbol]
                       for k in ("open", "high", "low", "close", "volume")}).dropna()
    df.index = df.index.tz_localize(None)
    return df


def backtrader_cross(df: pd.DataFrame) -> tuple[float, list[int]]:
    """Seconds and entry bars (0-based) of the EMA cross in backtrader."""
    import backtrader as bt

    class Cross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.cross = bt.ind.CrossOver(bt.ind.EMA(period=FAST), bt.ind.EMA(period=SLOW))
            self.entries: list[int] = []

        def next(self) -> None:
            if not self.position and self.cross[0] > 0:
                self.buy(size=NOTIONAL / self.data.close[0])
                self.entries.append(len(self))  # the order fills at the next bar's open
            elif self.position and self.cross[0] < 0:
                self.close()

    started = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(Cross)
    cerebro.broker.setcash(1e9)
    cerebro.broker.setcommission(commission=FEE)
    strategy = cerebro.run()[0]
    return time.perf_counter() - started, strategy.entries


def _cross_signals(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from meridian_common.indicators import ema_batch

    fast, slow = ema_batch(close, FAST), ema_batch(close, SLOW)
    above = fast > slow
    before = np.r_[False, above[:-1]]
    valid = ~np.isnan(slow) & ~np.isnan(np.r_[np.nan, slow[:-1]])
    return above & ~before & valid, ~above & before & valid


def vectorbt_cross(df: pd.DataFrame) -> tuple[float, list[int]]:
    """Seconds (compile excluded: the caller warms up) and entry bars of the same cross."""
    import vectorbt as vbt

    started = time.perf_counter()
    close = df["close"].to_numpy()
    up, down = _cross_signals(close)
    entries = pd.Series(np.r_[False, up[:-1]], index=df.index)  # known at the close: next open
    exits = pd.Series(np.r_[False, down[:-1]], index=df.index)
    size = NOTIONAL / np.r_[np.nan, close[:-1]]
    pf = vbt.Portfolio.from_signals(df["close"], entries, exits, price=df["open"], size=size,
                                    fees=FEE, init_cash=1e9)
    records = pf.trades.records
    seconds = time.perf_counter() - started
    return seconds, [int(i) for i in records["entry_idx"]]


SWEEP_GRID: dict[str, list[Any]] = {"entry_score": [0.4, 0.5, 0.6], "rsi_window": [14, 21],
                                     "ema_slow": [50, 100, 200]}


def _ours(wide: Any, grid: dict[str, list[Any]]) -> tuple[float, Any]:
    from meridian_research.portfolio import simulate
    from meridian_research.signals import TrendFactory

    started = time.perf_counter()
    result = simulate(wide, TrendFactory().run(wide, **grid), notional=NOTIONAL)
    return time.perf_counter() - started, result


def _raw(close: pd.DataFrame, combos: int) -> float:
    """An EMA-cross grid of `combos` windows in vectorbt alone (its indicators and simulator)."""
    import vectorbt as vbt

    started = time.perf_counter()
    fast = vbt.MA.run(close, window=[5 + i for i in range(combos)], ewm=True)
    slow = vbt.MA.run(close, window=[SLOW] * combos, ewm=True)
    tiled = np.tile(close.to_numpy(), (1, combos))  # the MA columns: combination-major
    vbt.Portfolio.from_signals(tiled, fast.ma_crossed_above(slow).to_numpy(),
                               fast.ma_crossed_below(slow).to_numpy(), fees=FEE,
                               size=NOTIONAL, size_type="value", init_cash=1e9, freq="1h")
    return time.perf_counter() - started


def sweep(grid: dict[str, list[Any]] = SWEEP_GRID) -> int:
    """Our sweep vs raw vectorbt on a grid of the same size over the four symbols."""
    from meridian_research.data import load_wide

    wide = load_wide()
    combos = int(np.prod([len(v) for v in grid.values()]))
    cells = int(sum(wide.present(s).sum() for s in wide.symbols)) * combos
    # numba compiles one specialization per array layout: warm up a one-column and a
    # many-column run (not timed)
    _ours(wide.select(["BTCUSDT"]), {k: v[:1] for k, v in grid.items()})
    _ours(wide, {k: v[:2] for k, v in grid.items()})
    _raw(wide.close.iloc[:500], 2)
    ours_s, result = _ours(wide, grid)
    # fingerprint: the grid's column with the released defaults trades as a run of it alone
    _, alone = _ours(wide, {"entry_score": 0.5, "rsi_window": 14, "ema_slow": 50})
    swept = result.stats.xs((0.5, 14, 50), level=("entry_score", "rsi_window", "ema_slow"))
    if list(swept["trades"]) != list(alone.stats["trades"]) or \
            not np.allclose(swept["pnl"].to_numpy(), alone.stats["pnl"].to_numpy()):
        print("FINGERPRINT MISMATCH: the sweep's default column differs from a run of it "
              "alone; the sweep figure does not count")
        return 1
    raw_s = _raw(wide.close, combos)
    print(f"\nresearch sweep, 4 symbols x {len(wide.index):,} hours x {combos} combinations "
          f"({', '.join(f'{k}={v}' for k, v in grid.items())}); fingerprint: the default "
          f"column = a run of it alone ({int(alone.stats['trades'].sum())} trades)")
    print(f"{'engine':<52}{'candles x combos/s':>20}{'vs raw':>9}")
    for name, secs in (("ours: shared rules, barriers, funding, liquidation", ours_s),
                       ("raw vectorbt: EMA cross, same grid size", raw_s)):
        print(f"{name:<52}{cells / secs:>20,.0f}{raw_s / secs:>8.2f}x")
    return 0


def main(replay_cps: float | None = None) -> int:
    df = _frame("BTCUSDT")
    n = len(df)
    bt_s, bt_entries = backtrader_cross(df)
    vectorbt_cross(df)  # numba compiles on the first call: not timed
    vb_s, vb_entries = vectorbt_cross(df)
    if bt_entries != vb_entries:
        print(f"FINGERPRINT MISMATCH: backtrader {len(bt_entries)} entries, vectorbt "
              f"{len(vb_entries)}; the EMA-cross figures do not count")
        return 1
    print(f"\nEMA {FAST}/{SLOW} cross, BTCUSDT 1h, {n:,} candles: {len(bt_entries)} trades in "
          "both engines (same entry bars)")
    print(f"{'engine':<40}{'candles/s':>14}{'vs backtrader':>15}")
    rows = [("backtrader 1.9.78 (event-driven)", n / bt_s),
            ("vectorbt on libs/common EMAs", n / vb_s)]
    if replay_cps:
        rows.append(("replay backtest, 6 services in-process", replay_cps))
    for name, cps in rows:
        print(f"{name:<40}{cps:>14,.0f}{cps / (n / bt_s):>14.2f}x")
    return sweep()
