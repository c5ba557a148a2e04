"""Average true range with Wilder's smoothing.

True range of a bar = max(high - low, |high - previous close|, |low - previous close|), so the first
bar has none: TA-Lib skips it rather than falling back to high - low.

Warm-up (as TA-Lib ATR, lookback `period`): the first value is the plain mean of the first
`period` true ranges (bars 1..period), at index `period`; after that
atr = (atr * (period - 1) + tr) / period. With period 1 this is the true range itself, again as
TA-Lib. Seeding with the mean (not with the first true range) is what makes the whole series,
not just its tail, agree with TA-Lib.

Both forms accumulate the seed left to right and apply the same recurrence, so they agree bit for
bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period

FloatArray = npt.NDArray[np.float64]


def hlc_arrays(high: npt.ArrayLike, low: npt.ArrayLike,
               close: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The three price series as float arrays, checked to be 1-D and equally long."""
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    if h.ndim != 1 or h.shape != lo.shape or h.shape != c.shape:
        raise ValueError(f"high, low and close must be 1-D and equally long, got shapes "
                         f"{h.shape}, {lo.shape}, {c.shape}")
    return h, lo, c


def true_range_batch(high: npt.ArrayLike, low: npt.ArrayLike,
                     close: npt.ArrayLike) -> FloatArray:
    """True range per bar; NaN for the first bar, which has no previous close."""
    h, lo, c = hlc_arrays(high, low, close)
    out = np.full(h.shape, np.nan)
    if h.size > 1:
        prev = c[:-1]
        out[1:] = np.maximum(h[1:] - lo[1:],
                             np.maximum(np.abs(h[1:] - prev), np.abs(lo[1:] - prev)))
    return out


@dataclass(slots=True)
class Atr:
    period: int = 14
    prev_close: float | None = None
    count: int = 0  # true ranges seen
    tr_sum: float = 0.0
    value: float | None = None

    def __post_init__(self) -> None:
        check_period("Atr", self.period)

    def update(self, high: float, low: float, close: float) -> float | None:
        prev, self.prev_close = self.prev_close, close
        if prev is None:
            return None
        tr = max(high - low, abs(high - prev), abs(low - prev))
        n = self.period
        if self.value is None:
            self.count += 1
            self.tr_sum += tr
            if self.count < n:
                return None
            self.value = self.tr_sum / n
        else:
            self.value = (self.value * (n - 1) + tr) / n
        return self.value


def atr_batch(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike,
              period: int = 14) -> FloatArray:
    """ATR of whole series; NaN for the first `period` positions.

    True ranges are vectorized; Wilder's recurrence is one tight loop over plain floats.
    """
    check_period("Atr", period)
    tr = true_range_batch(high, low, close)
    out = np.full(tr.shape, np.nan)
    if tr.size <= period:
        return out
    ranges = tr[1:].tolist()
    seed = 0.0
    for v in ranges[:period]:
        seed += v
    atr = seed / period
    result = [atr]
    for v in ranges[period:]:
        atr = (atr * (period - 1) + v) / period
        result.append(atr)
    out[period:] = result
    return out
