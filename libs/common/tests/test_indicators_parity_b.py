"""Parity proofs for OBV, MFI, ROC, CCI, Donchian, Keltner, session VWAP, z-score and realized
volatility, on the four shared hourly series.

For every indicator output and series: (a) the incremental class and the batch function agree
(worst relative difference <= 1e-12, same warm-up positions); (b) where TA-Lib has the indicator,
both agree with it within 1e-9 relative after the same warm-up (VWAP: a per-UTC-day group-by
reference instead). Each result is added to meridian_common.testing.PARITY, which conftest.py
prints as the "indicator parity" table.

Two comparisons with TA-Lib use an absolute floor (worst_relative(..., floor=1.0), i.e. absolute
differences where |value| < 1), both because TA-Lib keeps running sums that are never re-summed:
- MFI: TA-Lib adds and subtracts each money flow from running sums, so when one side of the
  window holds no flow its sum keeps a rounding residue (up to ~6e-11 on these series) instead
  of 0, and MFI comes out as e.g. 1e-13 where the exact value, and ours, is 0.0. Relative to 0
  that is a 100 % difference; in MFI points it is nothing. Away from exact zeros the comparison is
  also checked without the floor.
- z-score: talib.SMA is one running sum over the whole series; its drift (~1e-14 relative to the
  price) is harmless in the mean itself, and talib.STDDEV (shifted running sums, re-summed
  every 32 windows) is within ~2e-10 of a two-pass std: both ingredients are checked below at
  1e-9 relative against numpy's rolling mean/std. But z's numerator close - mean cancels, so where
  z is near 0 the SMA's drift divided by the std is the whole result (TA-Lib gives -1.6e-12 where
  the exact z is ~0). Measured in standard deviations the difference stays below ~2e-10.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pytest
import talib
from numpy.lib.stride_tricks import sliding_window_view

from meridian_common.indicators import cci as cci_module
from meridian_common.indicators import donchian as donchian_module
from meridian_common.indicators import keltner as keltner_module
from meridian_common.indicators import mfi as mfi_module
from meridian_common.indicators import obv as obv_module
from meridian_common.indicators import realized_vol as realized_vol_module
from meridian_common.indicators import roc as roc_module
from meridian_common.indicators import vwap as vwap_module
from meridian_common.indicators import zscore as zscore_module
from meridian_common.indicators.cci import Cci, cci_batch
from meridian_common.indicators.donchian import Channel, Donchian, donchian_batch
from meridian_common.indicators.keltner import Keltner, keltner_batch
from meridian_common.indicators.mfi import Mfi, mfi_batch
from meridian_common.indicators.obv import Obv, obv_batch
from meridian_common.indicators.realized_vol import RealizedVol, realized_vol_batch
from meridian_common.indicators.roc import Roc, roc_batch
from meridian_common.indicators.vwap import DAY_MS, Vwap, vwap_batch
from meridian_common.indicators.zscore import ZScore, zscore_batch
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_common.testing import PARITY, ParityResult, worst_relative

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
SMALL_AND_LARGE = ("BTCUSDT", "XRPUSDT")  # ~3e4 and ~0.5 USDT: non-default parameter runs
HEAD = 20_000  # bars per non-default parameter run (keeps the file fast)
INCR_VS_BATCH = 1e-12
VS_TALIB = 1e-9
HOUR_MS = 3_600_000

Floats = npt.NDArray[np.float64]
Bar = tuple[int, float, float, float, float]  # open_time_ms, high, low, close, volume


class Series(NamedTuple):
    name: str
    open_time_ms: npt.NDArray[np.int64]
    high: Floats
    low: Floats
    close: Floats
    volume: Floats
    rows: list[Bar]  # the same bars as Python numbers, for the incremental forms

    def bars(self, stop: int | None = None) -> list[Bar]:
        return self.rows[:stop]

    def head(self, n: int) -> Series:
        return Series(self.name, self.open_time_ms[:n], self.high[:n], self.low[:n],
                      self.close[:n], self.volume[:n], self.rows[:n])


def _load(symbol: str, timeframe: str = "1h") -> Series:
    raw = list(CsvCandleSource(default_data_dir(), symbol, timeframe).rows())
    rows = [(r.open_time_ms, float(r.high), float(r.low), float(r.close), float(r.volume))
            for r in raw]
    times = np.array([r[0] for r in rows], dtype=np.int64)
    table = np.array([r[1:] for r in rows], dtype=np.float64)
    return Series(symbol, times, table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(),
                  table[:, 3].copy(), rows)


@pytest.fixture(scope="module")
def series() -> dict[str, Series]:
    return {symbol: _load(symbol) for symbol in SYMBOLS}


# -- helpers ------------------------------------------------------------------------------------

def _floats(values: Sequence[float | None]) -> Floats:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _column(outputs: Sequence[Channel | None], field: str) -> Floats:
    return _floats([None if o is None else getattr(o, field) for o in outputs])


def _check(indicator: str, symbol: str, incremental: Floats, batch: Floats, lookback: int,
           talib_ref: Floats | None = None, talib_floor: float = 1e-12,
           gaps_allowed: bool = False) -> None:
    """Assert warm-up, incremental == batch and (if given) both ~ TA-Lib; record the result.

    gaps_allowed: values may be missing after the warm-up too (VWAP while a session has no
    volume); worst_relative still requires both forms to miss the same positions.
    """
    missing = np.isnan(batch)
    assert missing[:lookback].all(), f"{indicator}: value before the documented warm-up"
    assert gaps_allowed or not missing[lookback:].any(), f"{indicator}: missing after warm-up"
    inc_vs_batch = worst_relative(incremental.tolist(), batch.tolist())
    assert inc_vs_batch <= INCR_VS_BATCH, f"{indicator} {symbol}: incremental vs batch"
    vs_talib = None
    if talib_ref is not None:
        vs_talib = max(worst_relative(incremental.tolist(), talib_ref.tolist(), talib_floor),
                       worst_relative(batch.tolist(), talib_ref.tolist(), talib_floor))
        assert vs_talib <= VS_TALIB, f"{indicator} {symbol}: vs TA-Lib {vs_talib:.2e}"
    PARITY.append(ParityResult(indicator, symbol, int((~missing).sum()), inc_vs_batch, vs_talib))


def _run_obv(s: Series) -> Floats:
    ind = Obv()
    return _floats([ind.update(c, v) for _, _, _, c, v in s.bars()])


def _run_mfi(s: Series, period: int) -> Floats:
    ind = Mfi(period)
    return _floats([ind.update(h, lo, c, v) for _, h, lo, c, v in s.bars()])


def _run_roc(s: Series, period: int) -> Floats:
    ind = Roc(period)
    return _floats([ind.update(c) for c in s.close.tolist()])


def _run_cci(s: Series, period: int) -> Floats:
    ind = Cci(period)
    return _floats([ind.update(h, lo, c) for _, h, lo, c, _ in s.bars()])


def _run_donchian(s: Series, period: int) -> list[Channel | None]:
    ind = Donchian(period)
    return [ind.update(h, lo) for _, h, lo, _, _ in s.bars()]


def _run_keltner(s: Series, period: int, atr_period: int,
                 multiplier: float) -> list[Channel | None]:
    ind = Keltner(period, atr_period, multiplier)
    return [ind.update(h, lo, c) for _, h, lo, c, _ in s.bars()]


def _run_vwap(s: Series, session_ms: int = DAY_MS, offset_ms: int = 0) -> Floats:
    ind = Vwap(session_ms, offset_ms)
    return _floats([ind.update(t, h, lo, c, v) for t, h, lo, c, v in s.bars()])


def _run_zscore(s: Series, period: int) -> Floats:
    ind = ZScore(period)
    return _floats([ind.update(c) for c in s.close.tolist()])


def _run_realized_vol(s: Series, window: int, ddof: int, annualization: float) -> Floats:
    ind = RealizedVol(window, ddof, annualization)
    return _floats([ind.update(c) for c in s.close.tolist()])


def _log_returns(close: Floats) -> Floats:
    """NaN first: TA-Lib skips leading NaNs, so its lookback then counts from the first return."""
    return np.r_[math.nan, np.log(close[1:] / close[:-1])]


def _vwap_reference(s: Series, session_key: Callable[[int], object]) -> Floats:
    """Group bars by session key (consecutive runs) and take per-group cumulative sums."""
    keys = [session_key(t) for t in s.open_time_ms.tolist()]
    out = np.empty(len(keys))
    start = 0
    for stop in range(1, len(keys) + 1):
        if stop < len(keys) and keys[stop] == keys[start]:
            continue
        part = slice(start, stop)
        tp = (s.high[part] + s.low[part] + s.close[part]) / 3.0
        pv = np.cumsum(tp * s.volume[part])
        vol = np.cumsum(s.volume[part])
        out[part] = np.where(vol == 0.0, np.nan, pv / np.where(vol == 0.0, 1.0, vol))
        start = stop
    return out


def _utc_day(open_time_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(open_time_ms / 1000, dt.UTC).date()


# -- parity on all four series, default parameters ---------------------------------------------

@pytest.mark.parametrize("symbol", SYMBOLS)
def test_obv_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    _check("obv", symbol, _run_obv(s), obv_batch(s.close, s.volume), 0,
           talib.OBV(s.close, s.volume))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_mfi_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    batch = mfi_batch(s.high, s.low, s.close, s.volume, 14)
    want = talib.MFI(s.high, s.low, s.close, s.volume, 14)
    _check("mfi", symbol, _run_mfi(s, 14), batch, 14, want, talib_floor=1.0)
    nonzero = ~np.isnan(batch) & (batch != 0.0)  # the floor matters only at exact zeros
    assert worst_relative(batch[nonzero].tolist(), want[nonzero].tolist()) <= VS_TALIB


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_roc_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    _check("roc", symbol, _run_roc(s, 10), roc_batch(s.close, 10), 10, talib.ROC(s.close, 10))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_cci_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    _check("cci", symbol, _run_cci(s, 20), cci_batch(s.high, s.low, s.close, 20), 19,
           talib.CCI(s.high, s.low, s.close, 20))


def _check_channel(name: str, symbol: str, incremental: list[Channel | None],
                   batch: tuple[Floats, Floats, Floats], lookback: int,
                   want: tuple[Floats, Floats, Floats]) -> None:
    for k, field in enumerate(Channel._fields):
        _check(f"{name}.{field}", symbol, _column(incremental, field), batch[k], lookback,
               want[k])


def _talib_donchian(s: Series, period: int) -> tuple[Floats, Floats, Floats]:
    upper, lower = talib.MAX(s.high, period), talib.MIN(s.low, period)
    return upper, (upper + lower) / 2.0, lower


def _talib_keltner(s: Series, period: int, atr_period: int,
                   multiplier: float) -> tuple[Floats, Floats, Floats]:
    middle = talib.EMA(s.close, period)
    width = multiplier * talib.ATR(s.high, s.low, s.close, atr_period)
    middle = np.where(np.isnan(width), np.nan, middle)
    return middle + width, middle, middle - width


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_donchian_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    _check_channel("donchian", symbol, _run_donchian(s, 20), donchian_batch(s.high, s.low, 20),
                   19, _talib_donchian(s, 20))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_keltner_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    _check_channel("keltner", symbol, _run_keltner(s, 20, 10, 2.0),
                   keltner_batch(s.high, s.low, s.close), 19, _talib_keltner(s, 20, 10, 2.0))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_vwap_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    batch = vwap_batch(s.open_time_ms, s.high, s.low, s.close, s.volume)
    incremental = _run_vwap(s)
    _check("vwap", symbol, incremental, batch, 0)
    reference = _vwap_reference(s, _utc_day)
    worst = max(worst_relative(incremental.tolist(), reference.tolist()),
                worst_relative(batch.tolist(), reference.tolist()))
    assert worst <= VS_TALIB


def test_vwap_parity_on_minute_candles() -> None:
    """A 1m month with a 2-hour gap: 1440-bar sessions, same layout code, same parity."""
    s = _load("BTCUSDT", "1m")
    batch = vwap_batch(s.open_time_ms, s.high, s.low, s.close, s.volume)
    _check("vwap", "BTCUSDT-1m", _run_vwap(s), batch, 0)
    assert worst_relative(batch.tolist(), _vwap_reference(s, _utc_day).tolist()) <= VS_TALIB


def _two_pass(x: Floats, period: int) -> tuple[Floats, Floats]:
    """Rolling mean and population std from numpy's own (pairwise, two-pass) reductions."""
    windows = sliding_window_view(x, period)
    pad = np.full(period - 1, np.nan)
    return np.r_[pad, windows.mean(axis=1)], np.r_[pad, windows.std(axis=1)]


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_zscore_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    sma, stddev = talib.SMA(s.close, 20), talib.STDDEV(s.close, 20, 1)
    _check("zscore", symbol, _run_zscore(s, 20), zscore_batch(s.close, 20), 19,
           (s.close - sma) / stddev, talib_floor=1.0)
    # the ingredients match TA-Lib at the strict relative tolerance; only their composition
    # near z = 0 needs the floor (module docstring)
    mean, std = _two_pass(s.close, 20)
    assert worst_relative(mean.tolist(), sma.tolist()) <= VS_TALIB
    assert worst_relative(std.tolist(), stddev.tolist()) <= VS_TALIB


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_realized_vol_parity(series: dict[str, Series], symbol: str) -> None:
    s = series[symbol]
    annualization = math.sqrt(24 * 365)
    # default ddof = 1; talib.STDDEV is the population std: scale by sqrt(n / (n - 1))
    want = talib.STDDEV(_log_returns(s.close), 20, 1) * math.sqrt(20 / 19) * annualization
    _check("realized_vol", symbol, _run_realized_vol(s, 20, 1, annualization),
           realized_vol_batch(s.close), 20, want)


# -- non-default parameters ---------------------------------------------------------------------

@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize("period", [2, 5, 30])
def test_mfi_other_periods(series: dict[str, Series], symbol: str, period: int) -> None:
    s = series[symbol].head(HEAD)
    _check(f"mfi({period})", symbol, _run_mfi(s, period),
           mfi_batch(s.high, s.low, s.close, s.volume, period), period,
           talib.MFI(s.high, s.low, s.close, s.volume, period), talib_floor=1.0)


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize("period", [1, 24])
def test_roc_other_periods(series: dict[str, Series], symbol: str, period: int) -> None:
    s = series[symbol].head(HEAD)
    _check(f"roc({period})", symbol, _run_roc(s, period), roc_batch(s.close, period), period,
           talib.ROC(s.close, period))


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize("period", [5, 50])
def test_cci_other_periods(series: dict[str, Series], symbol: str, period: int) -> None:
    s = series[symbol].head(HEAD)
    _check(f"cci({period})", symbol, _run_cci(s, period),
           cci_batch(s.high, s.low, s.close, period), period - 1,
           talib.CCI(s.high, s.low, s.close, period))


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize("period", [5, 55])
def test_donchian_other_periods(series: dict[str, Series], symbol: str, period: int) -> None:
    s = series[symbol].head(HEAD)
    _check_channel(f"donchian({period})", symbol, _run_donchian(s, period),
                   donchian_batch(s.high, s.low, period), period - 1, _talib_donchian(s, period))


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize(("period", "atr_period", "multiplier"),
                         [(50, 20, 1.5), (10, 14, 3.0), (5, 30, 1.0)])
def test_keltner_other_parameters(series: dict[str, Series], symbol: str, period: int,
                                  atr_period: int, multiplier: float) -> None:
    s = series[symbol].head(HEAD)
    _check_channel(f"keltner({period},{atr_period},{multiplier})", symbol,
                   _run_keltner(s, period, atr_period, multiplier),
                   keltner_batch(s.high, s.low, s.close, period, atr_period, multiplier),
                   max(period - 1, atr_period), _talib_keltner(s, period, atr_period, multiplier))


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize("period", [5, 100])
def test_zscore_other_periods(series: dict[str, Series], symbol: str, period: int) -> None:
    s = series[symbol].head(HEAD)
    want = (s.close - talib.SMA(s.close, period)) / talib.STDDEV(s.close, period, 1)
    _check(f"zscore({period})", symbol, _run_zscore(s, period), zscore_batch(s.close, period),
           period - 1, want, talib_floor=1.0)


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize(("window", "ddof", "annualization"),
                         [(5, 0, 1.0), (100, 1, math.sqrt(365)), (24, 0, math.sqrt(24 * 365))])
def test_realized_vol_other_parameters(series: dict[str, Series], symbol: str, window: int,
                                       ddof: int, annualization: float) -> None:
    s = series[symbol].head(HEAD)
    scale = math.sqrt(window / (window - ddof)) * annualization
    want = talib.STDDEV(_log_returns(s.close), window, 1) * scale
    _check(f"realized_vol({window},{ddof})", symbol,
           _run_realized_vol(s, window, ddof, annualization),
           realized_vol_batch(s.close, window, ddof, annualization), window, want)


@pytest.mark.parametrize("symbol", SMALL_AND_LARGE)
@pytest.mark.parametrize(("session_hours", "offset_hours"), [(4, 0), (24, 8), (8, 1)])
def test_vwap_other_sessions(series: dict[str, Series], symbol: str, session_hours: int,
                             offset_hours: int) -> None:
    s = series[symbol].head(HEAD)

    def key(open_time_ms: int) -> tuple[dt.date, int]:
        shifted = dt.datetime.fromtimestamp(open_time_ms / 1000, dt.UTC)
        shifted -= dt.timedelta(hours=offset_hours)
        return shifted.date(), shifted.hour // session_hours

    session_ms, offset_ms = session_hours * HOUR_MS, offset_hours * HOUR_MS
    batch = vwap_batch(s.open_time_ms, s.high, s.low, s.close, s.volume, session_ms, offset_ms)
    # a session may open with a zero-volume bar (BTC 2023-03-24 12:00Z opens a 4-hour one):
    # VWAP is undefined there, in both forms
    _check(f"vwap({session_hours}h+{offset_hours}h)", symbol,
           _run_vwap(s, session_ms, offset_ms), batch, 0, gaps_allowed=True)
    assert worst_relative(batch.tolist(), _vwap_reference(s, key).tolist()) <= VS_TALIB


# -- session VWAP: boundaries and gaps ---------------------------------------------------------

def _bars_at(hours: Sequence[int]) -> list[Bar]:
    """Synthetic bars opening `hours` after 2024-01-01T00:00Z, with distinct prices/volumes."""
    base = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    return [(base + h * HOUR_MS, 101.0 + k, 99.0 + k, 100.0 + k, 1.0 + k)
            for k, h in enumerate(hours)]


def _both_vwaps(bars: list[Bar],
                session_ms: int = DAY_MS) -> tuple[list[float | None], Floats]:
    ind = Vwap(session_ms)
    incremental = [ind.update(*bar) for bar in bars]
    t, h, lo, c, v = (np.array(col) for col in zip(*bars, strict=True))
    return incremental, vwap_batch(t, h, lo, c, v, session_ms)


def _tp(bar: Bar) -> float:
    return (bar[1] + bar[2] + bar[3]) / 3.0


def _cumulative(bars: Sequence[Bar]) -> float:
    return sum(_tp(b) * b[4] for b in bars) / sum(b[4] for b in bars)


def test_vwap_resets_exactly_at_the_utc_day_boundary() -> None:
    bars = _bars_at([21, 22, 23, 24, 25])  # 24 = 00:00 of the next day
    incremental, batch = _both_vwaps(bars)
    for got in (incremental, batch.tolist()):
        assert got[2] == pytest.approx(_cumulative(bars[:3]), rel=1e-15)  # 23:00 still day 1
        assert got[3] == _tp(bars[3])  # 00:00 starts afresh: its own typical price, exactly
        assert got[4] == pytest.approx(_cumulative(bars[3:5]), rel=1e-15)


def test_vwap_gap_of_missing_candles() -> None:
    # 21:00, 22:00, then nothing until 03:00 the next day; a gap inside that session
    # (04:00 -> 09:00) does not reset; a gap of whole days does.
    bars = _bars_at([21, 22, 27, 28, 33, 24 * 4 + 10])
    incremental, batch = _both_vwaps(bars)
    for got in (incremental, batch.tolist()):
        assert got[1] == pytest.approx(_cumulative(bars[:2]), rel=1e-15)
        assert got[2] == _tp(bars[2])
        assert got[4] == pytest.approx(_cumulative(bars[2:5]), rel=1e-15)
        assert got[5] == _tp(bars[5])


def test_vwap_real_gap_across_a_day_boundary(series: dict[str, Series]) -> None:
    """LTC has no candles from 2018-02-08T01:00Z to 2018-02-09T09:00Z (33 missing hours)."""
    s = series["LTCUSDT"]
    resume = int(dt.datetime(2018, 2, 9, 10, tzinfo=dt.UTC).timestamp() * 1000)
    k = int(np.searchsorted(s.open_time_ms, resume))
    assert s.open_time_ms[k] == resume
    assert s.open_time_ms[k] - s.open_time_ms[k - 1] == 34 * HOUR_MS
    batch = vwap_batch(s.open_time_ms, s.high, s.low, s.close, s.volume)
    assert batch[k] == (s.high[k] + s.low[k] + s.close[k]) / 3.0
    assert batch[k - 1] == (s.high[k - 1] + s.low[k - 1] + s.close[k - 1]) / 3.0  # 00:00 bar


def test_vwap_custom_session_length() -> None:
    bars = _bars_at([2, 3, 4, 5])
    incremental, batch = _both_vwaps(bars, session_ms=4 * HOUR_MS)
    for got in (incremental, batch.tolist()):
        assert got[1] == pytest.approx(_cumulative(bars[:2]), rel=1e-15)
        assert got[2] == _tp(bars[2])  # 04:00 opens the second 4-hour session


def test_vwap_undefined_until_the_session_trades() -> None:
    bars = [(t, h, lo, c, 0.0 if k < 2 else v) for k, (t, h, lo, c, v) in
            enumerate(_bars_at([24, 25, 26, 27]))]
    incremental, batch = _both_vwaps(bars)
    assert incremental[:2] == [None, None]
    assert np.isnan(batch[:2]).all()
    assert incremental[2] == batch[2] == _tp(bars[2])


def test_vwap_rejects_out_of_order_bars() -> None:
    ind = Vwap()
    ind.update(HOUR_MS, 2.0, 1.0, 1.5, 1.0)
    with pytest.raises(ValueError, match="open_time_ms"):
        ind.update(HOUR_MS, 2.0, 1.0, 1.5, 1.0)
    ones = np.ones(2)
    with pytest.raises(ValueError, match="open_time_ms"):
        vwap_batch(np.array([HOUR_MS, HOUR_MS]), ones, ones, ones, ones)


# -- edge cases of the numerical conventions ----------------------------------------------------

def test_mfi_dead_zone_for_rounding_only_moves() -> None:
    # 246.4 + 241.77 + 243.66 == 245.16 + 241.64 + 245.03 in decimal (ETH, 2020-05-30 23:00Z
    # and 2020-05-31 00:00Z), but the float typical prices differ by one ulp; TA-Lib and we
    # count that as "unchanged".
    h = np.array([240.0, 246.4, 245.16])
    lo = np.array([238.0, 241.77, 241.64])
    c = np.array([239.0, 243.66, 245.03])
    v = np.array([1.0, 5.0, 7.0])
    assert (h[2] + lo[2] + c[2]) / 3.0 != (h[1] + lo[1] + c[1]) / 3.0
    ind = Mfi(2)
    got = [ind.update(*bar) for bar in zip(h.tolist(), lo.tolist(), c.tolist(), v.tolist(),
                                          strict=True)]
    assert got[2] == mfi_batch(h, lo, c, v, 2)[2] == talib.MFI(h, lo, c, v, 2)[2] == 100.0


def test_mfi_side_without_flows_is_exactly_zero() -> None:
    # large rising flows, then a full window of falling ones: the positive sum must be 0.0,
    # not the rounding residue of the flows that left
    tp = [1.0 + 0.1 * k for k in range(30)] + [4.0 - 0.01 * k for k in range(30)]
    vol = [1e9 / (k + 1) for k in range(30)] + [1e-3 * (k + 1) for k in range(30)]
    ind = Mfi(14)
    got = [ind.update(x, x, x, v) for x, v in zip(tp, vol, strict=True)]
    arr = np.array(tp)
    batch = mfi_batch(arr, arr, arr, np.array(vol), 14)
    assert got[-1] == batch[-1] == 0.0


def test_flat_windows_give_zero() -> None:
    flat = [7.3] * 30
    cci, zscore = Cci(20), ZScore(20)
    assert [cci.update(x, x, x) for x in flat][-1] == 0.0
    assert [zscore.update(x) for x in flat][-1] == 0.0
    arr = np.array(flat)
    assert cci_batch(arr, arr, arr, 20)[-1] == 0.0
    assert zscore_batch(arr, 20)[-1] == 0.0
    assert talib.CCI(arr, arr, arr, 20)[-1] == 0.0


def test_roc_zero_base_gives_zero_like_talib() -> None:
    x = [1.0, 0.0, 2.0, 3.0]
    ind = Roc(1)
    got = [ind.update(v) for v in x]
    assert got[2] == roc_batch(np.array(x), 1)[2] == talib.ROC(np.array(x), 1)[2] == 0.0


def test_realized_vol_ddof_relation_and_bad_close() -> None:
    close = np.array([100.0, 101.0, 99.5, 102.0, 103.5, 101.0, 100.5])
    sample = realized_vol_batch(close, 5, 1, 1.0)[-1]
    population = realized_vol_batch(close, 5, 0, 1.0)[-1]
    assert sample == pytest.approx(population * math.sqrt(5 / 4), rel=1e-15)
    with pytest.raises(ValueError, match="close"):
        RealizedVol().update(0.0)
    with pytest.raises(ValueError, match="close"):
        realized_vol_batch(np.array([1.0, -1.0, 2.0]))


# -- state round trip, parameter validation, independence ---------------------------------------

FEEDS: dict[str, tuple[Callable[[], Any], Callable[[Any, Bar], object]]] = {
    "obv": (Obv, lambda ind, b: ind.update(b[3], b[4])),
    "mfi": (lambda: Mfi(14), lambda ind, b: ind.update(b[1], b[2], b[3], b[4])),
    "roc": (lambda: Roc(10), lambda ind, b: ind.update(b[3])),
    "cci": (lambda: Cci(20), lambda ind, b: ind.update(b[1], b[2], b[3])),
    "donchian": (lambda: Donchian(20), lambda ind, b: ind.update(b[1], b[2])),
    "keltner": (lambda: Keltner(20, 10, 2.0), lambda ind, b: ind.update(b[1], b[2], b[3])),
    "vwap": (lambda: Vwap(4 * HOUR_MS), lambda ind, b: ind.update(*b)),
    "zscore": (lambda: ZScore(20), lambda ind, b: ind.update(b[3])),
    "realized_vol": (lambda: RealizedVol(20), lambda ind, b: ind.update(b[3])),
}


def _plain(value: object) -> bool:
    """Plain, JSON-able state: numbers, lists of floats, or nested dicts of those (a composed
    indicator such as Keltner carries its parts' states)."""
    if isinstance(value, list | tuple):
        return all(isinstance(v, float) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return value is None or isinstance(value, int | float)


@pytest.mark.parametrize("name", sorted(FEEDS))
@pytest.mark.parametrize("split", [3, 400])
def test_state_round_trips_mid_stream(series: dict[str, Series], name: str, split: int) -> None:
    make, feed = FEEDS[name]
    bars = series["LTCUSDT"].bars(800)
    original = make()
    for bar in bars[:split]:
        feed(original, bar)
    state = dataclasses.asdict(original)
    assert all(_plain(v) for v in state.values()), state
    restored = type(original)(**state)
    assert restored == original
    for bar in bars[split:]:
        assert feed(restored, bar) == feed(original, bar)
    assert restored == original


ONE = np.ones(3)
BAD_PARAMETERS: list[tuple[Callable[[], object], str]] = [
    (lambda: Mfi(1), "period"),
    (lambda: mfi_batch(ONE, ONE, ONE, ONE, 1), "period"),
    (lambda: Roc(0), "period"),
    (lambda: roc_batch(ONE, 0), "period"),
    (lambda: Cci(1), "period"),
    (lambda: cci_batch(ONE, ONE, ONE, 1), "period"),
    (lambda: Donchian(0), "period"),
    (lambda: donchian_batch(ONE, ONE, 0), "period"),
    (lambda: Keltner(0), "period"),
    (lambda: Keltner(20, 0), "atr_period"),
    (lambda: Keltner(20, 10, 0.0), "multiplier"),
    (lambda: Keltner(20, 10, math.nan), "multiplier"),
    (lambda: keltner_batch(ONE, ONE, ONE, 20, 10, -1.0), "multiplier"),
    (lambda: Vwap(0), "session_ms"),
    (lambda: Vwap(1.5), "session_ms"),  # type: ignore[arg-type]
    (lambda: Vwap(DAY_MS, -1), "session_offset_ms"),
    (lambda: Vwap(DAY_MS, DAY_MS), "session_offset_ms"),
    (lambda: vwap_batch(ONE, ONE, ONE, ONE, ONE, 0), "session_ms"),
    (lambda: ZScore(1), "period"),
    (lambda: zscore_batch(ONE, 1), "period"),
    (lambda: RealizedVol(1), "window"),
    (lambda: RealizedVol(20, 2), "ddof"),
    (lambda: RealizedVol(20, 1, 0.0), "annualization"),
    (lambda: realized_vol_batch(ONE, 20, 1, math.inf), "annualization"),
]


@pytest.mark.parametrize(("make", "field"), BAD_PARAMETERS)
def test_parameter_validation(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


@pytest.mark.parametrize(("module", "cls"), [
    (obv_module, "Obv"), (mfi_module, "Mfi"), (roc_module, "Roc"), (cci_module, "Cci"),
    (donchian_module, "Donchian"), (keltner_module, "Keltner"), (vwap_module, "Vwap"),
    (zscore_module, "ZScore"), (realized_vol_module, "RealizedVol")])
def test_batch_forms_do_not_use_the_incremental_classes(
        monkeypatch: pytest.MonkeyPatch, series: dict[str, Series], module: Any,
        cls: str) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError(f"{cls} used by its batch form")

    monkeypatch.setattr(getattr(module, cls), "update", refuse)
    monkeypatch.setattr(getattr(module, cls), "__init__", refuse)
    s = series["ETHUSDT"].head(300)
    obv_batch(s.close, s.volume)
    mfi_batch(s.high, s.low, s.close, s.volume)
    roc_batch(s.close)
    cci_batch(s.high, s.low, s.close)
    donchian_batch(s.high, s.low)
    keltner_batch(s.high, s.low, s.close)
    vwap_batch(s.open_time_ms, s.high, s.low, s.close, s.volume)
    zscore_batch(s.close)
    realized_vol_batch(s.close)
