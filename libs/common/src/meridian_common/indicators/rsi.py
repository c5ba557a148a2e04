"""Relative strength index with Wilder's smoothing.

Warm-up (as TA-Lib): needs `period` price changes, i.e. period + 1 inputs (first value at index
period, TA-Lib's RSI lookback); the first averages are simple means of the first `period` gains
and losses, later ones are smoothed as avg = (avg * (period - 1) + change) / period. Seeding with
plain means (not with the first change) is TA-Lib's convention and makes the whole series agree
with it. When nothing moved over the averages (avg gain + avg loss == 0) the value is 0, also as
TA-Lib.

Both forms accumulate the seeds left to right and apply the same recurrence, so they agree bit
for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Rsi:
    period: int
    count: int = 0
    prev: float | None = None
    avg_gain: float = 0.0
    avg_loss: float = 0.0
    value: float | None = None

    def __post_init__(self) -> None:
        check_period("Rsi", self.period, 2)

    def update(self, x: float) -> float | None:
        prev, self.prev = self.prev, x
        if prev is None:
            return None
        self.count += 1
        change = x - prev
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        n = self.period
        if self.count < n:
            self.avg_gain += gain
            self.avg_loss += loss
            return None
        if self.count == n:
            self.avg_gain = (self.avg_gain + gain) / n
            self.avg_loss = (self.avg_loss + loss) / n
        else:
            self.avg_gain = (self.avg_gain * (n - 1) + gain) / n
            self.avg_loss = (self.avg_loss * (n - 1) + loss) / n
        total = self.avg_gain + self.avg_loss
        self.value = 0.0 if total == 0 else 100.0 * self.avg_gain / total
        return self.value


def rsi_batch(x: npt.ArrayLike, period: int) -> FloatArray:
    """RSI of a whole series; NaN for the first `period` positions.

    Gains and losses are vectorized; Wilder's recurrence is one tight loop over plain floats.
    """
    check_period("Rsi", period, 2)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {xs.shape}")
    out = np.full(xs.shape, np.nan)
    if xs.size <= period:
        return out
    change = np.diff(xs)
    gains = np.where(change > 0, change, 0.0).tolist()
    losses = np.where(change < 0, -change, 0.0).tolist()
    n = period
    avg_gain = avg_loss = 0.0
    for g, lo in zip(gains[:n], losses[:n], strict=True):
        avg_gain += g
        avg_loss += lo
    avg_gain /= n
    avg_loss /= n
    up = [avg_gain]
    down = [avg_loss]
    for g, lo in zip(gains[n:], losses[n:], strict=True):
        avg_gain = (avg_gain * (n - 1) + g) / n
        avg_loss = (avg_loss * (n - 1) + lo) / n
        up.append(avg_gain)
        down.append(avg_loss)
    gain_avg = np.asarray(up)
    total = gain_avg + np.asarray(down)
    safe = np.where(total == 0, 1.0, total)
    out[n:] = np.where(total == 0, 0.0, 100.0 * gain_avg / safe)
    return out
