"""On-balance volume (OBV).

Warm-up (as TA-Lib, checked against talib.OBV): none. The first bar's value is its own volume
(TA-Lib seeds the total with volume[0], not with 0); after that a bar's volume is added when its
close is above the previous close, subtracted when below and ignored when equal. OBV is a running
total, so its level depends on where the series starts; only its changes carry information.

Bars are counted, not time: a gap of missing candles is simply the next bar.

Numerics: both forms add the same signed volumes in the same order (np.cumsum is a sequential
accumulate, and x - v is the same IEEE operation as x + (-v)), so they agree bit for bit with
each other and with TA-Lib. O(1) per update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class Obv:
    prev_close: float | None = None
    value: float = 0.0

    def update(self, close: float, volume: float) -> float:
        prev, self.prev_close = self.prev_close, close
        if prev is None:
            self.value = volume
        elif close > prev:
            self.value += volume
        elif close < prev:
            self.value -= volume
        return self.value


def obv_batch(close: npt.ArrayLike, volume: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """OBV for whole arrays (no warm-up: every position has a value)."""
    c = np.asarray(close, dtype=np.float64)
    v = np.asarray(volume, dtype=np.float64)
    if c.shape != v.shape or c.ndim != 1:
        raise ValueError(f"close and volume must be 1-D of equal length, got {c.shape}, {v.shape}")
    out = np.empty_like(c)
    if c.size == 0:
        return out
    change = c[1:] - c[:-1]
    out[0] = v[0]
    out[1:] = np.where(change > 0, v[1:], np.where(change < 0, -v[1:], 0.0))
    return np.cumsum(out, out=out)
