"""Average directional index with the directional indicators +DI and -DI (Wilder), as TA-Lib's
ADX, PLUS_DI and MINUS_DI.

Per bar (from the second): up = high - previous high, down = previous low - low; +DM = up when
up > down and up > 0, -DM = down when down > up and down > 0, otherwise 0; TR is the true range.
+DM, -DM and TR are smoothed as Wilder *sums*: s = s - s / period + value.

Warm-up, following TA-Lib exactly (its seeding is unusual, and matching it is what makes the whole
series agree rather than only converge after a few hundred bars):
- the sums are seeded with the plain sums of the first period - 1 bars' values (bars 1..period-1),
  then smoothed once with bar `period`'s values; so +DI = 100 * s(+DM) / s(TR) and
  -DI = 100 * s(-DM) / s(TR) first exist at index `period` (TA-Lib PLUS_DI / MINUS_DI lookback);
- DX = 100 * |+DI - -DI| / (+DI + -DI); ADX is first the mean of the `period` DX values of bars
  period..2*period-1, so it first exists at index 2 * period - 1 (TA-Lib ADX lookback), then
  adx = (adx * (period - 1) + dx) / period.
Degenerate bars, as TA-Lib: when s(TR) is 0 both DI are 0; when it or +DI + -DI is 0 there is no
DX, which counts as 0 in the seed mean and leaves ADX unchanged afterwards. Zero means exactly
zero, with no epsilon, so the result does not depend on the price scale (the installed TA-Lib
behaves the same; checked with prices scaled down to 1e-20).

The streaming form returns None for the first `period` bars, then AdxValue whose `adx` is None
until index 2 * period - 1; the batch form returns NaN at the same places.

Both forms apply the same recurrences in the same order, so they agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.atr import hlc_arrays, true_range_batch
from meridian_common.indicators.ring import check_period

FloatArray = npt.NDArray[np.float64]


class AdxValue(NamedTuple):
    adx: float | None
    plus_di: float
    minus_di: float


def _dx(plus_di: float, minus_di: float) -> float | None:
    total = plus_di + minus_di
    return None if total == 0 else 100.0 * (abs(minus_di - plus_di) / total)


@dataclass(slots=True)
class Adx:
    period: int = 14
    prev_high: float | None = None
    prev_low: float = 0.0
    prev_close: float = 0.0
    count: int = 0  # bars seen after the first
    plus_dm: float = 0.0  # Wilder sums
    minus_dm: float = 0.0
    tr: float = 0.0
    dx_sum: float = 0.0
    adx: float | None = None

    def __post_init__(self) -> None:
        check_period("Adx", self.period, 2)

    def update(self, high: float, low: float, close: float) -> AdxValue | None:
        if self.prev_high is None:
            self.prev_high, self.prev_low, self.prev_close = high, low, close
            return None
        up = high - self.prev_high
        down = self.prev_low - low
        plus = up if up > 0 and up > down else 0.0
        minus = down if down > 0 and down > up else 0.0
        prev = self.prev_close
        tr = max(high - low, abs(high - prev), abs(low - prev))
        self.prev_high, self.prev_low, self.prev_close = high, low, close
        self.count += 1
        n = self.period
        if self.count < n:
            self.plus_dm += plus
            self.minus_dm += minus
            self.tr += tr
            return None
        self.plus_dm = self.plus_dm - self.plus_dm / n + plus
        self.minus_dm = self.minus_dm - self.minus_dm / n + minus
        self.tr = self.tr - self.tr / n + tr
        if self.tr == 0:
            plus_di = minus_di = 0.0
            dx = None
        else:
            plus_di = 100.0 * (self.plus_dm / self.tr)
            minus_di = 100.0 * (self.minus_dm / self.tr)
            dx = _dx(plus_di, minus_di)
        if self.adx is None:
            if dx is not None:
                self.dx_sum += dx
            if self.count == 2 * n - 1:
                self.adx = self.dx_sum / n
        elif dx is not None:
            self.adx = (self.adx * (n - 1) + dx) / n
        return AdxValue(self.adx, plus_di, minus_di)


def _directional_movement(h: FloatArray, lo: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(+DM, -DM) per bar; NaN for the first bar, which has no previous one."""
    plus = np.full(h.shape, np.nan)
    minus = np.full(h.shape, np.nan)
    up = h[1:] - h[:-1]
    down = lo[:-1] - lo[1:]
    plus[1:] = np.where((up > 0) & (up > down), up, 0.0)
    minus[1:] = np.where((down > 0) & (down > up), down, 0.0)
    return plus, minus


def _wilder_sums(values: FloatArray, period: int) -> list[float]:
    """Wilder sums from bar `period` on: seeded with the plain sum of bars 1..period-1."""
    items = values[1:].tolist()
    total = 0.0
    for v in items[:period - 1]:
        total += v
    out = []
    for v in items[period - 1:]:
        total = total - total / period + v
        out.append(total)
    return out


def adx_batch(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike,
              period: int = 14) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(ADX, +DI, -DI) of whole series; the DIs NaN for the first `period` positions, ADX for the
    first 2 * period - 1.

    Directional movement, true range, DI and DX are vectorized; the Wilder sums and the ADX
    average are tight loops over plain floats.
    """
    check_period("Adx", period, 2)
    h, lo, c = hlc_arrays(high, low, close)
    adx = np.full(h.shape, np.nan)
    plus_di = np.full(h.shape, np.nan)
    minus_di = np.full(h.shape, np.nan)
    if h.size <= period:
        return adx, plus_di, minus_di
    plus_dm, minus_dm = _directional_movement(h, lo)
    tr = np.asarray(_wilder_sums(true_range_batch(h, lo, c), period))
    has_range = tr != 0
    safe_tr = np.where(has_range, tr, 1.0)
    pdi = np.where(has_range, 100.0 * (np.asarray(_wilder_sums(plus_dm, period)) / safe_tr), 0.0)
    mdi = np.where(has_range, 100.0 * (np.asarray(_wilder_sums(minus_dm, period)) / safe_tr), 0.0)
    plus_di[period:] = pdi
    minus_di[period:] = mdi
    di_total = pdi + mdi
    has_dx = has_range & (di_total != 0)
    dx = np.where(has_dx, 100.0 * (np.abs(mdi - pdi) / np.where(has_dx, di_total, 1.0)), 0.0)
    if h.size > 2 * period - 1:
        dxs, valid = dx.tolist(), has_dx.tolist()
        seed = 0.0
        for v in dxs[:period]:
            seed += v  # a missing DX is 0 here: it adds nothing but still counts in the mean
        value = seed / period
        result = [value]
        for v, ok in zip(dxs[period:], valid[period:], strict=True):
            if ok:
                value = (value * (period - 1) + v) / period
            result.append(value)
        adx[2 * period - 1:] = result
    return adx, plus_di, minus_di
