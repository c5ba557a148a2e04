"""Exponential moving average.

Warm-up (as TA-Lib): the first value is the simple mean of the first `period` inputs; after that
ema += k * (x - ema) with k = 2 / (period + 1). Outputs start at the `period`-th input (index
period - 1, TA-Lib's EMA lookback). Seeding with the mean rather than the first input is what
makes the whole series, not just its tail, agree with TA-Lib.

Both forms sum the seed left to right and apply the same recurrence, so they agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Ema:
    period: int
    count: int = 0
    seed_sum: float = 0.0
    value: float | None = None

    def __post_init__(self) -> None:
        check_period("Ema", self.period)

    @property
    def k(self) -> float:
        return 2.0 / (self.period + 1)

    def update(self, x: float) -> float | None:
        self.count += 1
        if self.value is None:
            self.seed_sum += x
            if self.count < self.period:
                return None
            self.value = self.seed_sum / self.period
            return self.value
        self.value = (x - self.value) * self.k + self.value
        return self.value


def ema_batch(x: npt.ArrayLike, period: int) -> FloatArray:
    """EMA of a whole series; NaN for the first period - 1 positions.

    The recurrence is inherently sequential, so this is one tight loop over plain floats (a
    closed form through powers of (1 - k) loses precision over tens of thousands of values).
    """
    check_period("Ema", period)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {xs.shape}")
    out = np.full(xs.shape, np.nan)
    if xs.size < period:
        return out
    values = xs.tolist()
    k = 2.0 / (period + 1)
    seed = 0.0
    for v in values[:period]:
        seed += v
    ema = seed / period
    result = [ema]
    for v in values[period:]:
        ema = (v - ema) * k + ema
        result.append(ema)
    out[period - 1:] = result
    return out
