"""Commodity channel index (CCI).

CCI = (tp - mean) / (0.015 * mean deviation) over the last `period` typical prices
tp = (high + low + close) / 3, with mean deviation = mean(|tp_i - mean|) (Lambert's definition,
as TA-Lib; checked against talib.CCI).

Warm-up (as TA-Lib): lookback = period - 1, i.e. the first output is at the period-th input.

Numerics, and why the results are bit-identical with TA-Lib:
- The numerator tp - mean is a difference of two nearly equal numbers whenever CCI is small, so
  the rounding of the mean shows through: at BTC prices (~3e4 USDT, one ulp ~4e-12) a CCI of
  0.02 comes from a difference of a few cents, and changing the order of the window's additions
  moves it by ~1e-10 relative. Summing in chronological order instead of TA-Lib's order moved
  the results by up to 5.7e-10 relative on the shared hourly series (periods 5 to 50).
  Both forms therefore sum the window in ring-buffer slot order (bar i sits in slot
  i mod period, slots summed 0..period-1, one addition at a time from 0.0), which is TA-Lib's
  order; the batch form gathers the windows into that order. Plain loops are used rather than
  sum(): from Python 3.12 on, sum() of floats is compensated and would round differently.
- A numerator within 1e-14 * (|tp| + |mean|) (about 90 ulps) is reported as exactly 0.0: such a
  difference is rounding of decimal prices (a flat window, or bars whose high + low + close are
  equal in decimal but not in binary), not a signal. TA-Lib (C library 0.8) does the same; a
  zero mean deviation also gives 0.0.
The mean and the mean deviation need the whole window, so an update is O(period).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period, push

_DEAD_ZONE = 1e-14  # relative, see module docstring
_LAMBERT = 0.015


@dataclass(slots=True)
class Cci:
    period: int = 20
    window: list[float] = field(default_factory=list)  # typical prices, ring buffer
    slot: int = 0  # next slot to write (= number of inputs seen, mod period)

    def __post_init__(self) -> None:
        check_period("Cci", self.period, 2)

    def update(self, high: float, low: float, close: float) -> float | None:
        tp = (high + low + close) / 3.0
        self.slot, _ = push(self.window, self.slot, self.period, tp)
        if len(self.window) < self.period:
            return None
        total = 0.0
        for value in self.window:
            total += value
        mean = total / self.period
        deviation = 0.0
        for value in self.window:
            deviation += abs(value - mean)
        numerator = tp - mean
        if abs(numerator) <= _DEAD_ZONE * (abs(tp) + abs(mean)) or deviation == 0.0:
            return 0.0
        return numerator / (_LAMBERT * (deviation / self.period))


def cci_batch(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike,
              period: int = 20) -> npt.NDArray[np.float64]:
    """CCI for whole arrays; NaN for the first period - 1 positions."""
    check_period("Cci", period, 2)
    h, lo, c = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    if not h.shape == lo.shape == c.shape or h.ndim != 1:
        raise ValueError("high, low and close must be 1-D of equal length")
    out = np.full(h.shape, np.nan)
    if h.size < period:
        return out
    tp = (h + lo + c) / 3.0
    last = np.arange(period - 1, tp.size)
    # windows[k, s] is the bar of window k held in ring slot s: the one with index = s (mod p)
    slots = np.arange(period)
    windows = tp[last[:, None] - (last[:, None] - slots[None, :]) % period]
    total = np.zeros(last.size)
    for s in range(period):
        total += windows[:, s]
    mean = total / period
    deviation = np.zeros(last.size)
    for s in range(period):
        deviation += np.abs(windows[:, s] - mean)
    latest = tp[period - 1:]
    numerator = latest - mean
    zero = (np.abs(numerator) <= _DEAD_ZONE * (np.abs(latest) + np.abs(mean))) | (deviation == 0.0)
    safe = np.where(zero, 1.0, deviation)
    out[period - 1:] = np.where(zero, 0.0, numerator / (_LAMBERT * (safe / period)))
    return out
