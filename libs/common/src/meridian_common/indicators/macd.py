"""Moving average convergence/divergence: line = EMA(fast) - EMA(slow), signal = EMA(signal) of
the line, histogram = line - signal.

Warm-up (as TA-Lib MACD, lookback (slow - 1) + (signal - 1), 33 for 12/26/9):
- the slow EMA is seeded with the mean of the first `slow` inputs (first value at index slow - 1);
- the fast EMA is aligned to it, not started earlier: TA-Lib seeds it with the mean of the `fast`
  inputs ending at index slow - 1 (inputs slow - fast .. slow - 1), so both EMAs begin together;
- the signal EMA is seeded with the mean of the first `signal` line values and first exists at
  index slow + signal - 2. All three outputs start there (the line, though known from index
  slow - 1, is withheld until then, as TA-Lib does).
With k = 2 / (period + 1) for each EMA. Any other seeding (e.g. a fast EMA running from the first
input) gives a line that only converges to TA-Lib's after a few hundred bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ema import ema_batch

FloatArray = npt.NDArray[np.float64]


class MacdValue(NamedTuple):
    macd: float
    signal: float
    hist: float


def _check(fast_period: int, slow_period: int, signal_period: int) -> None:
    if fast_period < 2:
        raise ValueError(f"Macd.fast_period must be >= 2, got {fast_period}")
    if slow_period <= fast_period:
        raise ValueError(f"Macd.slow_period must be > fast_period ({fast_period}), "
                         f"got {slow_period}")
    if signal_period < 1:
        raise ValueError(f"Macd.signal_period must be >= 1, got {signal_period}")


@dataclass(slots=True)
class Macd:
    fast_period: int = 12
    slow_period: int = 26
    signal_period: int = 9
    count: int = 0
    fast_sum: float = 0.0
    slow_sum: float = 0.0
    signal_sum: float = 0.0
    fast_ema: float | None = None
    slow_ema: float | None = None
    signal_ema: float | None = None

    def __post_init__(self) -> None:
        _check(self.fast_period, self.slow_period, self.signal_period)

    @property
    def lookback(self) -> int:
        return self.slow_period + self.signal_period - 2

    def update(self, x: float) -> MacdValue | None:
        self.count += 1
        if self.slow_ema is None or self.fast_ema is None:
            self.slow_sum += x
            if self.count > self.slow_period - self.fast_period:
                self.fast_sum += x
            if self.count < self.slow_period:
                return None
            self.slow_ema = self.slow_sum / self.slow_period
            self.fast_ema = self.fast_sum / self.fast_period
        else:
            kf = 2.0 / (self.fast_period + 1)
            ks = 2.0 / (self.slow_period + 1)
            self.fast_ema = (x - self.fast_ema) * kf + self.fast_ema
            self.slow_ema = (x - self.slow_ema) * ks + self.slow_ema
        line = self.fast_ema - self.slow_ema
        if self.signal_ema is None:
            self.signal_sum += line
            if self.count <= self.lookback:
                return None
            self.signal_ema = self.signal_sum / self.signal_period
        else:
            k = 2.0 / (self.signal_period + 1)
            self.signal_ema = (line - self.signal_ema) * k + self.signal_ema
        return MacdValue(line, self.signal_ema, line - self.signal_ema)


def macd_batch(x: npt.ArrayLike, fast_period: int = 12, slow_period: int = 26,
               signal_period: int = 9) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(line, signal, histogram) of a whole series; each NaN for the first
    slow + signal - 2 positions."""
    _check(fast_period, slow_period, signal_period)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {xs.shape}")
    line = np.full(xs.shape, np.nan)
    signal = np.full(xs.shape, np.nan)
    lookback = slow_period + signal_period - 2
    if xs.size > lookback:
        start = slow_period - 1
        slow = ema_batch(xs, slow_period)[start:]
        # Fast EMA started slow - fast inputs late: its seed window ends where the slow one's does.
        fast = ema_batch(xs[slow_period - fast_period:], fast_period)[fast_period - 1:]
        full_line = fast - slow
        signal[start:] = ema_batch(full_line, signal_period)
        line[lookback:] = full_line[signal_period - 1:]
    return line, signal, line - signal
