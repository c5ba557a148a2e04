"""Slow stochastic oscillator, as TA-Lib STOCH with SMA smoothing (matype 0).

fast %K = 100 * ((close - lowest low) / (highest high - lowest low)) over `fastk_period` bars, and
0 when the range is empty (highest == lowest), as TA-Lib. The operations are grouped as the
installed TA-Lib groups them (checked: with no smoothing the two agree to the last bit; the other
groupings differ by an ulp in a third of the bars). slow %K = SMA of fast %K over `slowk_period`,
slow %D = SMA of slow %K over `slowd_period`.

Warm-up (as TA-Lib, lookback (fastk - 1) + (slowk - 1) + (slowd - 1), 8 for 5/3/3): both outputs
start together at that index; slow %K, though known slowd - 1 bars earlier, is withheld until %D
exists, as TA-Lib does.

Cost: the streaming form takes max/min over its `fastk_period` ring buffers and sums the two small
smoothing buffers directly, O(fastk + slowk + slowd) per update. These windows are short (a few
bars) and a direct scan keeps the state plain lists with no drift; a monotonic deque would make
the extremes amortized O(1) at the price of variable-length state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from meridian_common.indicators.atr import hlc_arrays

FloatArray = npt.NDArray[np.float64]


class StochValue(NamedTuple):
    k: float
    d: float


def _check(fastk_period: int, slowk_period: int, slowd_period: int) -> None:
    for name, value in (("fastk_period", fastk_period), ("slowk_period", slowk_period),
                        ("slowd_period", slowd_period)):
        if value < 1:
            raise ValueError(f"Stoch.{name} must be >= 1, got {value}")


def _push(ring: list[float], index: int, size: int, x: float) -> int:
    """Put x in a ring buffer of `size` slots; returns the next index to overwrite."""
    if len(ring) < size:
        ring.append(x)
        return index
    ring[index] = x
    return (index + 1) % size


@dataclass(slots=True)
class Stoch:
    fastk_period: int = 5
    slowk_period: int = 3
    slowd_period: int = 3
    highs: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    hl_index: int = 0
    fastk: list[float] = field(default_factory=list)
    fastk_index: int = 0
    slowk: list[float] = field(default_factory=list)
    slowk_index: int = 0

    def __post_init__(self) -> None:
        _check(self.fastk_period, self.slowk_period, self.slowd_period)

    def update(self, high: float, low: float, close: float) -> StochValue | None:
        n = self.fastk_period
        _push(self.highs, self.hl_index, n, high)
        self.hl_index = _push(self.lows, self.hl_index, n, low)
        if len(self.lows) < n:
            return None
        lowest = min(self.lows)
        diff = max(self.highs) - lowest
        fastk = 100.0 * ((close - lowest) / diff) if diff != 0.0 else 0.0
        self.fastk_index = _push(self.fastk, self.fastk_index, self.slowk_period, fastk)
        if len(self.fastk) < self.slowk_period:
            return None
        slowk = sum(self.fastk) / self.slowk_period
        self.slowk_index = _push(self.slowk, self.slowk_index, self.slowd_period, slowk)
        if len(self.slowk) < self.slowd_period:
            return None
        return StochValue(slowk, sum(self.slowk) / self.slowd_period)


def stoch_batch(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike,
                fastk_period: int = 5, slowk_period: int = 3,
                slowd_period: int = 3) -> tuple[FloatArray, FloatArray]:
    """(slow %K, slow %D) of whole series; both NaN for the first
    fastk + slowk + slowd - 3 positions."""
    _check(fastk_period, slowk_period, slowd_period)
    h, lo, c = hlc_arrays(high, low, close)
    k = np.full(h.shape, np.nan)
    d = np.full(h.shape, np.nan)
    lookback = fastk_period + slowk_period + slowd_period - 3
    if h.size <= lookback:
        return k, d
    highest = sliding_window_view(h, fastk_period).max(axis=1)
    lowest = sliding_window_view(lo, fastk_period).min(axis=1)
    diff = highest - lowest
    rise = c[fastk_period - 1:] - lowest
    fastk = np.where(diff != 0.0, 100.0 * (rise / np.where(diff != 0.0, diff, 1.0)), 0.0)
    slowk = sliding_window_view(fastk, slowk_period).mean(axis=1)
    slowd = sliding_window_view(slowk, slowd_period).mean(axis=1)
    k[lookback:] = slowk[slowd_period - 1:]
    d[lookback:] = slowd
    return k, d
