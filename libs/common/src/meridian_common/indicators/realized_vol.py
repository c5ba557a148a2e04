"""Realized volatility: rolling standard deviation of log returns, annualized.

vol = sqrt(sum((r_i - mean(r))^2) / (window - ddof)) * annualization over the last `window` log
returns r_t = ln(close_t / close_{t-1}).

ddof: 1 by default, the SAMPLE standard deviation (divide by window - 1), the usual estimator for
return volatility (pandas' rolling std); ddof = 0 gives the population one, which is what
talib.STDDEV computes, and vol(ddof=1) = vol(ddof=0) * sqrt(window / (window - 1)) exactly.
annualization multiplies the per-bar figure: sqrt(bars per year), by default sqrt(24 * 365) for
hourly bars of a market that trades around the clock; use 1.0 for per-bar volatility. Bars are
counted, not time: a return across a gap of missing candles is treated as one bar's return.

Warm-up (as talib.STDDEV of the returns): a return needs two closes, so `window` returns need
window + 1 closes: the first output is at index `window` (lookback = window).

Numerics: like the z-score, each update recomputes the window in two passes (mean, then squared
deviations) in chronological order, and the batch form does the same additions column by column,
and takes its logs from `ring.log_returns` (libm's log, as `math.log` here, not numpy's SIMD
log, which differs by an ulp on some CPUs), so the two agree to the last bit.
O(window) per update; see zscore.py for why running sums / windowed Welford updates were not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from meridian_common.indicators.ring import (
    in_order,
    log_returns,
    mean_and_squares,
    push,
    windows_mean_and_squares,
)

HOURLY_ANNUALIZATION = math.sqrt(24 * 365)


def _check(window: int, ddof: int, annualization: float) -> None:
    if window < 2:
        raise ValueError(f"RealizedVol.window must be >= 2, got {window}")
    if ddof not in (0, 1):
        raise ValueError(f"RealizedVol.ddof must be 0 or 1, got {ddof}")
    if not (math.isfinite(annualization) and annualization > 0.0):
        raise ValueError(f"RealizedVol.annualization must be finite and > 0, got {annualization}")


@dataclass(slots=True)
class RealizedVol:
    window: int = 20
    ddof: int = 1
    annualization: float = HOURLY_ANNUALIZATION
    prev_close: float | None = None
    returns: list[float] = field(default_factory=list)  # ring buffer of log returns
    slot: int = 0  # oldest return once the ring is full

    def __post_init__(self) -> None:
        _check(self.window, self.ddof, self.annualization)

    def update(self, close: float) -> float | None:
        if not close > 0.0:
            raise ValueError(f"RealizedVol.update: close must be > 0, got {close}")
        prev, self.prev_close = self.prev_close, close
        if prev is None:
            return None
        r = math.log(close / prev)
        self.slot, _ = push(self.returns, self.slot, self.window, r)
        if len(self.returns) < self.window:
            return None
        ordered = in_order(self.returns, self.slot)
        _, squares = mean_and_squares(ordered)
        return math.sqrt(squares / (self.window - self.ddof)) * self.annualization


def realized_vol_batch(close: npt.ArrayLike, window: int = 20, ddof: int = 1,
                       annualization: float = HOURLY_ANNUALIZATION) -> npt.NDArray[np.float64]:
    """Realized volatility for a whole array; NaN for the first `window` positions."""
    _check(window, ddof, annualization)
    c = np.asarray(close, dtype=np.float64)
    if np.any(~(c > 0.0)):
        raise ValueError("realized_vol_batch: every close must be > 0")
    out = np.full(c.shape, np.nan)
    if c.size <= window:
        return out
    windows = sliding_window_view(log_returns(c)[1:], window)
    _, squares = windows_mean_and_squares(windows)
    out[window:] = np.sqrt(squares / (window - ddof)) * annualization
    return out
