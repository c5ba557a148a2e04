"""Donchian channel: highest high, lowest low and their midpoint over the last `period` bars.

Warm-up (as TA-Lib MAX/MIN): lookback = period - 1, i.e. the first output is at the period-th
input. The window includes the current bar, like talib.MAX(high) / talib.MIN(low); a breakout
rule ("close above the channel") must therefore compare with the previous bar's channel.

Numerics: max, min and (upper + lower) / 2 are exact or correctly rounded single operations, so
both forms agree bit for bit with each other and with TA-Lib. The incremental form rescans its
ring buffer, O(period) per update; a monotonic deque would be O(1) amortized but makes the state
harder to read and restore, and periods here are tens of bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from meridian_common.indicators.ring import check_period, push


class Channel(NamedTuple):
    """A price channel; Donchian and Keltner both return one."""

    upper: float
    middle: float
    lower: float


@dataclass(slots=True)
class Donchian:
    period: int = 20
    highs: list[float] = field(default_factory=list)  # ring buffers of the window
    lows: list[float] = field(default_factory=list)
    slot: int = 0  # oldest bar once the rings are full

    def __post_init__(self) -> None:
        check_period("Donchian", self.period)

    def update(self, high: float, low: float) -> Channel | None:
        push(self.lows, self.slot, self.period, low)
        self.slot, _ = push(self.highs, self.slot, self.period, high)
        if len(self.highs) < self.period:
            return None
        upper = max(self.highs)
        lower = min(self.lows)
        return Channel(upper, (upper + lower) / 2.0, lower)


def donchian_batch(high: npt.ArrayLike, low: npt.ArrayLike, period: int = 20,
                   ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                              npt.NDArray[np.float64]]:
    """(upper, middle, lower) for whole arrays; NaN for the first period - 1 positions."""
    check_period("Donchian", period)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    if h.shape != lo.shape or h.ndim != 1:
        raise ValueError(f"high and low must be 1-D of equal length, got {h.shape}, {lo.shape}")
    upper = np.full(h.shape, np.nan)
    lower = np.full(h.shape, np.nan)
    if h.size >= period:
        upper[period - 1:] = sliding_window_view(h, period).max(axis=1)
        lower[period - 1:] = sliding_window_view(lo, period).min(axis=1)
    return upper, (upper + lower) / 2.0, lower
