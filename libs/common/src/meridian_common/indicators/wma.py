"""Weighted (linearly weighted) moving average: weights 1..period, the newest input weighing most.

Warm-up (as TA-Lib WMA, lookback period - 1): the first value is at the `period`-th input (index
period - 1); one value per input after.

The streaming form is O(1): besides the ring buffer it keeps the window's plain sum S and weighted
sum W, and a new input x (oldest o leaving) gives W' = W - S + period * x, S' = S - o + x. Both
running sums gather rounding, so they are recomputed from the buffer whenever the ring wraps
(O(period) once every `period` updates, amortized O(1)). The batch form is a direct convolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period, push

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Wma:
    period: int
    window: list[float] = field(default_factory=list)
    index: int = 0  # slot the next input overwrites: the oldest input once the window is full
    total: float = 0.0
    weighted: float = 0.0

    def __post_init__(self) -> None:
        check_period("Wma", self.period)

    @property
    def divisor(self) -> float:
        return self.period * (self.period + 1) / 2.0

    def update(self, x: float) -> float | None:
        window, n = self.window, self.period
        self.index, old = push(window, self.index, n, x)
        if old is None:
            self.total += x
            self.weighted += len(window) * x
            return self.weighted / self.divisor if len(window) == n else None
        if self.index == 0:  # ring wrapped: buffer is in time order, resync both sums
            self.total = sum(window)
            self.weighted = sum((i + 1) * v for i, v in enumerate(window))
        else:
            self.weighted = self.weighted - self.total + n * x
            self.total = self.total - old + x
        return self.weighted / self.divisor


def wma_batch(x: npt.ArrayLike, period: int) -> FloatArray:
    """WMA of a whole series; NaN for the first period - 1 positions."""
    check_period("Wma", period)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {xs.shape}")
    out = np.full(xs.shape, np.nan)
    if xs.size >= period:
        # np.convolve flips the kernel, so weights given newest-first land oldest-first.
        kernel = np.arange(period, 0, -1, dtype=np.float64)
        out[period - 1:] = np.convolve(xs, kernel, mode="valid") / (period * (period + 1) / 2.0)
    return out
