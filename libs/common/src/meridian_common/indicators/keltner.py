"""Keltner channel: EMA of close +/- multiplier * ATR, built from the shared Ema and Atr.

middle = EMA(close, period) and width = multiplier * ATR(atr_period), each with its own module's
TA-Lib conventions (EMA seeded with the mean of the first `period` closes; Wilder ATR seeded with
the mean of the first `atr_period` true ranges, the first bar having none). Composing the two
keeps one implementation of each idea: a fix to either reaches the channel too.

Warm-up: the channel needs both parts, so the first output is at index
max(period - 1, atr_period). Defaults are the usual 20-bar EMA, 10-bar ATR and multiplier 2.
O(1) per update.

State: the two parts' states are plain nested dicts in `dataclasses.asdict(k)`; passing them back
(`Keltner(**asdict(k))`) restores the channel exactly mid-stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.atr import Atr, atr_batch, hlc_arrays
from meridian_common.indicators.donchian import Channel
from meridian_common.indicators.ema import Ema, ema_batch


def _check(period: int, atr_period: int, multiplier: float) -> None:
    if period < 1:
        raise ValueError(f"Keltner.period must be >= 1, got {period}")
    if atr_period < 1:
        raise ValueError(f"Keltner.atr_period must be >= 1, got {atr_period}")
    if not (math.isfinite(multiplier) and multiplier > 0.0):
        raise ValueError(f"Keltner.multiplier must be finite and > 0, got {multiplier}")


@dataclass(slots=True)
class Keltner:
    period: int = 20
    atr_period: int = 10
    multiplier: float = 2.0
    ema: Any = field(default=None)
    atr: Any = field(default=None)

    def __post_init__(self) -> None:
        _check(self.period, self.atr_period, self.multiplier)
        if self.ema is None:
            self.ema = Ema(self.period)
        elif isinstance(self.ema, dict):
            self.ema = Ema(**self.ema)
        if self.atr is None:
            self.atr = Atr(self.atr_period)
        elif isinstance(self.atr, dict):
            self.atr = Atr(**self.atr)

    def update(self, high: float, low: float, close: float) -> Channel | None:
        middle = self.ema.update(close)
        atr = self.atr.update(high, low, close)
        if middle is None or atr is None:
            return None
        width = self.multiplier * atr
        return Channel(middle + width, middle, middle - width)


def keltner_batch(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike,
                  period: int = 20, atr_period: int = 10, multiplier: float = 2.0,
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                             npt.NDArray[np.float64]]:
    """(upper, middle, lower) for whole arrays; NaN for the first max(period - 1, atr_period)."""
    _check(period, atr_period, multiplier)
    h, lo, c = hlc_arrays(high, low, close)
    middle = ema_batch(c, period)
    width = multiplier * atr_batch(h, lo, c, atr_period)
    middle[np.isnan(width)] = np.nan
    return middle + width, middle, middle - width
