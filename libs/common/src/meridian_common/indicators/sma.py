"""Simple moving average.

Warm-up (as TA-Lib SMA, lookback period - 1): the first value is the mean of the first `period`
inputs, so it appears at the `period`-th input (index period - 1); one value per input after.

The streaming form keeps a ring buffer and a running sum. A running sum drifts by rounding as
values enter and leave, so it is recomputed from the buffer each time the ring wraps: O(period)
once every `period` updates, amortized O(1), and the drift never outlives one window. The batch
form sums every window directly (a convolution); the streaming form stays within a few 1e-15.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period, push

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Sma:
    period: int
    window: list[float] = field(default_factory=list)
    index: int = 0  # slot the next input overwrites once the window is full
    total: float = 0.0

    def __post_init__(self) -> None:
        check_period("Sma", self.period)

    def update(self, x: float) -> float | None:
        window = self.window
        self.index, old = push(window, self.index, self.period, x)
        if old is None:
            self.total += x
            return self.total / self.period if len(window) == self.period else None
        if self.index == 0:
            self.total = sum(window)  # resync: drop the rounding the running sum gathered
        else:
            self.total = self.total + x - old
        return self.total / self.period


def sma_batch(x: npt.ArrayLike, period: int) -> FloatArray:
    """SMA of a whole series; NaN for the first period - 1 positions."""
    check_period("Sma", period)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {xs.shape}")
    out = np.full(xs.shape, np.nan)
    if xs.size >= period:
        out[period - 1:] = np.convolve(xs, np.ones(period), mode="valid") / period
    return out
