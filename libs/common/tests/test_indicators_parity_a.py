"""Indicator library, part A: each indicator's streaming class against its batch function and
both against TA-Lib, on all four shared hourly series (BTC, ETH, XRP, LTC).

What is checked, per indicator output and series:
- warm-up: the first value is at TA-Lib's lookback in the streaming form, the batch form and
  TA-Lib alike, and every later position has a value in all three (worst_relative raises when one
  side has a value and another does not);
- streaming vs batch within 1e-12 relative (they are independent implementations);
- batch vs TA-Lib within 1e-9 relative over the whole series: every indicator here reproduces
  TA-Lib's seeding, so no extra settle window is needed for any of them.

Relative differences are taken against max(|value|, floor) with worst_relative's default floor
(1e-12), except for outputs whose values legitimately sit at or cross 0, where the relative
difference of a value near 0 says nothing and an absolute one on the indicator's own scale does.
For those the floor is 1e-5 of the scale, so a value below it is compared absolutely, at
1e-9 * floor = 1e-14 of the scale:
- MACD (all three outputs): differences of nearly equal EMAs that cross zero. TA-Lib's EMAs and
  ours differ by an ulp or two of the price now and then (1.5e-11 on BTC, also for plain
  talib.EMA(5)), and at a line value of -0.0126 that is 6e-10 relative, however right both are.
  Scale: the series' median close (floor ~0.3 on BTC, ~4e-6 on XRP); worst then 5e-11.
- STOCH: TA-Lib smooths %K with a running sum that leaves residues of ~1e-13 where %K is
  exactly 0 (a close at the low three bars running; seen on the synthetic bars, not in the four
  series). Scale: 100, the oscillator's range (floor 1e-3 points).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pytest
import talib

from meridian_common.indicators.adx import Adx, adx_batch
from meridian_common.indicators.atr import Atr, atr_batch
from meridian_common.indicators.bbands import Bbands, bbands_batch
from meridian_common.indicators.ema import Ema, ema_batch
from meridian_common.indicators.macd import Macd, macd_batch
from meridian_common.indicators.rsi import Rsi, rsi_batch
from meridian_common.indicators.sma import Sma, sma_batch
from meridian_common.indicators.stoch import Stoch, stoch_batch
from meridian_common.indicators.wma import Wma, wma_batch
from meridian_common.marketdata import CsvCandleSource, default_data_dir
from meridian_common.testing import PARITY, ParityResult, worst_relative

FloatArray = npt.NDArray[np.float64]
Arrays = tuple[FloatArray, ...]

SERIES = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
INCREMENTAL_VS_BATCH = 1e-12
VS_TALIB = 1e-9


class Bars(NamedTuple):
    high: FloatArray
    low: FloatArray
    close: FloatArray
    closes: list[float]  # plain floats for the streaming forms
    rows: list[tuple[float, float, float]]


def make_bars(high: Sequence[float], low: Sequence[float], close: Sequence[float]) -> Bars:
    h, lo, c = (np.asarray(v, dtype=np.float64) for v in (high, low, close))
    return Bars(h, lo, c, c.tolist(), list(zip(h.tolist(), lo.tolist(), c.tolist(), strict=True)))


@pytest.fixture(scope="module")
def series() -> dict[str, Bars]:
    loaded: dict[str, Bars] = {}
    for symbol in SERIES:
        rows = list(CsvCandleSource(default_data_dir(), symbol, "1h").rows())
        loaded[symbol] = make_bars([float(r.high) for r in rows], [float(r.low) for r in rows],
                                   [float(r.close) for r in rows])
    return loaded


# -- the cases -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One indicator with one parameter set, in its three implementations."""

    label: str  # e.g. "MACD(12,26,9)"; outputs are reported as label.output
    outputs: tuple[str, ...]
    lookbacks: tuple[int, ...]  # first index with a value, per output (TA-Lib's lookback)
    make: Callable[[], Any]  # a fresh streaming indicator
    hlc: bool  # update(high, low, close) rather than update(close)
    batch: Callable[[Bars], Arrays]
    talib: Callable[[Bars], Arrays]
    scale: Callable[[Bars], float] | None = None  # outputs at/across 0: see the module docstring

    def __str__(self) -> str:
        return self.label


def sma_case(p: int) -> Case:
    return Case(f"SMA({p})", ("sma",), (p - 1,), lambda: Sma(p), False,
                lambda b: (sma_batch(b.close, p),), lambda b: (talib.SMA(b.close, p),))


def ema_case(p: int) -> Case:
    return Case(f"EMA({p})", ("ema",), (p - 1,), lambda: Ema(p), False,
                lambda b: (ema_batch(b.close, p),), lambda b: (talib.EMA(b.close, p),))


def wma_case(p: int) -> Case:
    return Case(f"WMA({p})", ("wma",), (p - 1,), lambda: Wma(p), False,
                lambda b: (wma_batch(b.close, p),), lambda b: (talib.WMA(b.close, p),))


def rsi_case(p: int) -> Case:
    return Case(f"RSI({p})", ("rsi",), (p,), lambda: Rsi(p), False,
                lambda b: (rsi_batch(b.close, p),), lambda b: (talib.RSI(b.close, p),))


def macd_case(fast: int, slow: int, signal: int) -> Case:
    lookback = slow + signal - 2
    return Case(f"MACD({fast},{slow},{signal})", ("macd", "signal", "hist"), (lookback,) * 3,
                lambda: Macd(fast, slow, signal), False,
                lambda b: macd_batch(b.close, fast, slow, signal),
                lambda b: talib.MACD(b.close, fast, slow, signal),
                scale=lambda b: float(np.median(np.abs(b.close))))


def atr_case(p: int) -> Case:
    return Case(f"ATR({p})", ("atr",), (p,), lambda: Atr(p), True,
                lambda b: (atr_batch(b.high, b.low, b.close, p),),
                lambda b: (talib.ATR(b.high, b.low, b.close, p),))


def bbands_case(p: int, up: float, dn: float) -> Case:
    return Case(f"BBANDS({p},{up:g},{dn:g})", ("upper", "middle", "lower"), (p - 1,) * 3,
                lambda: Bbands(p, up, dn), False, lambda b: bbands_batch(b.close, p, up, dn),
                lambda b: talib.BBANDS(b.close, p, up, dn, 0))


def stoch_case(fastk: int, slowk: int, slowd: int) -> Case:
    lookback = fastk + slowk + slowd - 3
    return Case(f"STOCH({fastk},{slowk},{slowd})", ("slowk", "slowd"), (lookback,) * 2,
                lambda: Stoch(fastk, slowk, slowd), True,
                lambda b: stoch_batch(b.high, b.low, b.close, fastk, slowk, slowd),
                lambda b: talib.STOCH(b.high, b.low, b.close, fastk, slowk, 0, slowd, 0),
                scale=lambda _: 100.0)


def adx_case(p: int) -> Case:
    return Case(f"ADX({p})", ("adx", "plus_di", "minus_di"), (2 * p - 1, p, p), lambda: Adx(p),
                True, lambda b: adx_batch(b.high, b.low, b.close, p),
                lambda b: (talib.ADX(b.high, b.low, b.close, p),
                           talib.PLUS_DI(b.high, b.low, b.close, p),
                           talib.MINUS_DI(b.high, b.low, b.close, p)))


# TA-Lib's default parameters (SMA/EMA/WMA: its default period 30).
DEFAULT_CASES = [
    sma_case(30), ema_case(30), wma_case(30), rsi_case(14), macd_case(12, 26, 9), atr_case(14),
    bbands_case(20, 2.0, 2.0), stoch_case(5, 3, 3), adx_case(14),
]

OTHER_CASES = [
    sma_case(2), sma_case(200),
    ema_case(2), ema_case(200),
    wma_case(2), wma_case(100),
    rsi_case(2), rsi_case(30),
    macd_case(5, 35, 5), macd_case(8, 17, 9), macd_case(12, 26, 1),
    atr_case(1), atr_case(50),
    bbands_case(2, 2.0, 2.0), bbands_case(10, 1.5, 2.5), bbands_case(50, 1.0, 0.0),
    stoch_case(14, 3, 3), stoch_case(9, 1, 1), stoch_case(21, 5, 5),
    adx_case(2), adx_case(30),
]

OTHER_SERIES = ("BTCUSDT", "XRPUSDT")  # the highest and the lowest price level


# -- running and comparing -------------------------------------------------------------------------

def run_stream(case: Case, bars: Bars) -> list[list[float | None]]:
    """The streaming form over the bars, split into one list per output."""
    indicator = case.make()
    if case.hlc:
        values = [indicator.update(h, lo, c) for h, lo, c in bars.rows]
    else:
        values = [indicator.update(x) for x in bars.closes]
    if len(case.outputs) == 1:
        return [values]
    return [[None if v is None else v[j] for v in values] for j in range(len(case.outputs))]


def first_index(values: Sequence[float | None]) -> int:
    return next(i for i, v in enumerate(values) if v is not None and not math.isnan(v))


@dataclass
class Compared:
    output: str
    values: int
    incremental_vs_batch: float
    vs_talib: float


def compare(case: Case, bars: Bars) -> list[Compared]:
    """Both forms and TA-Lib on one series; asserts warm-up positions, returns worst differences."""
    stream = run_stream(case, bars)
    batch = case.batch(bars)
    reference = case.talib(bars)
    floor = 1e-12 if case.scale is None else 1e-5 * case.scale(bars)
    results = []
    for j, output in enumerate(case.outputs):
        inc, bat, ref = stream[j], batch[j].tolist(), np.asarray(reference[j]).tolist()
        assert len(inc) == len(bat) == len(ref) == len(bars.closes)
        starts = (first_index(inc), first_index(bat), first_index(ref))
        assert starts == (case.lookbacks[j],) * 3, f"{case}.{output}: warm-up ends {starts}"
        results.append(Compared(output, len(ref) - case.lookbacks[j],
                                worst_relative(inc, bat, floor), worst_relative(bat, ref, floor)))
    return results


def assert_within(case: Case, series_name: str, results: list[Compared]) -> None:
    for r in results:
        where = f"{case}.{r.output} on {series_name}"
        assert r.incremental_vs_batch <= INCREMENTAL_VS_BATCH, \
            f"{where}: streaming vs batch {r.incremental_vs_batch:.2e}"
        assert r.vs_talib <= VS_TALIB, f"{where}: vs TA-Lib {r.vs_talib:.2e}"


# -- parity on the shared series ------------------------------------------------------------------

@pytest.mark.parametrize("series_name", SERIES)
@pytest.mark.parametrize("case", DEFAULT_CASES, ids=str)
def test_default_parameters_match_talib(case: Case, series_name: str,
                                        series: dict[str, Bars]) -> None:
    results = compare(case, series[series_name])
    for r in results:
        PARITY.append(ParityResult(f"{case}.{r.output}" if len(results) > 1 else case.label,
                                   series_name, r.values, r.incremental_vs_batch, r.vs_talib))
    assert_within(case, series_name, results)


@pytest.mark.parametrize("series_name", OTHER_SERIES)
@pytest.mark.parametrize("case", OTHER_CASES, ids=str)
def test_other_parameters_match_talib(case: Case, series_name: str,
                                      series: dict[str, Bars]) -> None:
    assert_within(case, series_name, compare(case, series[series_name]))


def degenerate_bars() -> Bars:
    """Flat stretches (empty ranges, no change), exact ties between highs and lows, and moves
    again: the zero-division conventions (RSI 0, STOCH 0, DI 0 and ADX held) all get hit."""
    rng = np.random.default_rng(7)
    steps = np.round(rng.normal(0.0, 1.0, 400)) * 0.1  # many exact zeros and ties
    steps[:60] = 0.0
    steps[200:240] = 0.0
    close = 100.0 + np.cumsum(steps)
    spread = np.round(rng.uniform(0.0, 2.0, 400)) * 0.05
    spread[:50] = 0.0
    spread[200:230] = 0.0
    high = np.maximum(close, np.roll(close, 1)) + spread
    low = np.minimum(close, np.roll(close, 1)) - spread
    high[0], low[0] = close[0], close[0]
    return make_bars(high.tolist(), low.tolist(), close.tolist())


@pytest.mark.parametrize("case", [*DEFAULT_CASES, stoch_case(3, 1, 1), adx_case(3), rsi_case(3),
                                  bbands_case(5, 2.0, 2.0)], ids=str)
def test_flat_and_tied_bars_match_talib(case: Case) -> None:
    assert_within(case, "synthetic", compare(case, degenerate_bars()))


def test_flat_window_bands_collapse_to_the_mean() -> None:
    bars = degenerate_bars()
    bands = Bbands(20)
    streamed = [bands.update(x) for x in bars.closes[:60]]
    upper, middle, lower = bbands_batch(bars.close[:60])
    assert streamed[40] == (100.0, 100.0, 100.0)
    assert (upper[19:50] == 100.0).all()
    assert (lower[19:50] == 100.0).all()
    assert (middle[19:50] == 100.0).all()


# -- streaming state -------------------------------------------------------------------------------

STATE_CASES = [*DEFAULT_CASES, sma_case(2), wma_case(1), bbands_case(2, 2.0, 2.0),
               stoch_case(1, 1, 1), macd_case(2, 3, 1)]


@pytest.mark.parametrize("case", STATE_CASES, ids=str)
def test_state_round_trips_mid_stream(case: Case, series: dict[str, Bars]) -> None:
    """asdict -> constructor (and through JSON) continues exactly, during and after warm-up."""
    bars = series["ETHUSDT"]
    inputs: list[tuple[float, ...]] = (
        list(bars.rows[:1500]) if case.hlc else [(x,) for x in bars.closes[:1500]])
    for cut in (0, 1, 3, max(case.lookbacks), 997):
        original = case.make()
        for args in inputs[:cut]:
            original.update(*args)
        state = dataclasses.asdict(original)
        copies = [type(original)(**state),
                  type(original)(**json.loads(json.dumps(state, allow_nan=False)))]
        assert copies[0] == original
        assert copies[1] == original
        for args in inputs[cut:]:
            want = original.update(*args)
            assert all(c.update(*args) == want for c in copies), f"{case} after cut {cut}"


# -- parameters --------------------------------------------------------------------------------

X = [1.0, 2.0, 3.0]


@pytest.mark.parametrize(("build", "field"), [
    (lambda: Sma(0), "Sma.period"),
    (lambda: sma_batch(X, 0), "Sma.period"),
    (lambda: Ema(0), "Ema.period"),
    (lambda: ema_batch(X, 0), "Ema.period"),
    (lambda: Wma(0), "Wma.period"),
    (lambda: wma_batch(X, 0), "Wma.period"),
    (lambda: Rsi(1), "Rsi.period"),
    (lambda: rsi_batch(X, 1), "Rsi.period"),
    (lambda: Macd(fast_period=1), "Macd.fast_period"),
    (lambda: Macd(fast_period=26, slow_period=26), "Macd.slow_period"),
    (lambda: Macd(signal_period=0), "Macd.signal_period"),
    (lambda: macd_batch(X, 26, 12), "Macd.slow_period"),
    (lambda: Atr(0), "Atr.period"),
    (lambda: atr_batch(X, X, X, 0), "Atr.period"),
    (lambda: Bbands(period=1), "Bbands.period"),
    (lambda: Bbands(nbdev_up=-1.0), "Bbands.nbdev_up"),
    (lambda: Bbands(nbdev_dn=math.nan), "Bbands.nbdev_dn"),
    (lambda: bbands_batch(X, 20, 2.0, math.inf), "Bbands.nbdev_dn"),
    (lambda: Stoch(fastk_period=0), "Stoch.fastk_period"),
    (lambda: Stoch(slowk_period=0), "Stoch.slowk_period"),
    (lambda: Stoch(slowd_period=0), "Stoch.slowd_period"),
    (lambda: stoch_batch(X, X, X, 5, 3, 0), "Stoch.slowd_period"),
    (lambda: Adx(1), "Adx.period"),
    (lambda: adx_batch(X, X, X, 1), "Adx.period"),
    (lambda: atr_batch(X, X[:2], X), "equally long"),
    (lambda: sma_batch([X, X], 2), "1-D"),
])
def test_bad_parameters_name_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_short_inputs_give_only_warm_up() -> None:
    x = [1.0, 2.0, 3.0, 2.0]
    assert np.isnan(sma_batch(x, 5)).all()
    assert np.isnan(ema_batch(x, 5)).all()
    assert np.isnan(wma_batch(x, 5)).all()
    assert np.isnan(rsi_batch(x, 4)).all()
    assert all(np.isnan(a).all() for a in macd_batch(x))
    assert np.isnan(atr_batch(x, x, x, 4)).all()
    assert all(np.isnan(a).all() for a in bbands_batch(x, 5))
    assert all(np.isnan(a).all() for a in stoch_batch(x, x, x))
    assert all(np.isnan(a).all() for a in adx_batch(x, x, x, 4))
    assert sma_batch([], 3).shape == (0,)
