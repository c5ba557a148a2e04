"""Bollinger Bands: middle = SMA(period), upper/lower = middle +/- nbdev * population standard
deviation of the same window (divisor period, not period - 1, as TA-Lib BBANDS with matype SMA).

Warm-up (as TA-Lib BBANDS, lookback period - 1): all three bands start at index period - 1.

Numerics: TA-Lib takes the variance as mean(x^2) - mean(x)^2 from running sums, which cancels
badly at high prices (its deviation is off by ~1e-10 relative on BTC; the bands, dominated by the
middle, still agree to ~1e-13). The batch form computes each window's deviation in two passes.
The streaming form keeps the window's mean and sum of squared deviations (m2) and updates both
when one value replaces another (Welford's update for a sliding window), O(1). That update
cancels when the spread collapses (e.g. a window of equal prices right after a big move), so the
form also carries a bound on the rounding m2 has gathered (m2_err) and recomputes mean and m2 from
the ring buffer, in two passes, whenever the bound exceeds 1e-12 of m2, and in any case each time
the ring wraps. Recomputing is O(period): once per `period` updates plus after collapses,
amortized O(1) on market data, and it keeps the deviation within ~1e-12 relative of the batch
form's even for windows of equal prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from meridian_common.indicators.ring import push

FloatArray = npt.NDArray[np.float64]


class BbandsValue(NamedTuple):
    upper: float
    middle: float
    lower: float


def _check(period: int, nbdev_up: float, nbdev_dn: float) -> None:
    if period < 2:
        raise ValueError(f"Bbands.period must be >= 2, got {period}")
    if not (math.isfinite(nbdev_up) and nbdev_up >= 0):
        raise ValueError(f"Bbands.nbdev_up must be finite and >= 0, got {nbdev_up}")
    if not (math.isfinite(nbdev_dn) and nbdev_dn >= 0):
        raise ValueError(f"Bbands.nbdev_dn must be finite and >= 0, got {nbdev_dn}")


_EPS = 2.0 ** -52
_M2_REL_TOL = 1e-12


@dataclass(slots=True)
class Bbands:
    period: int = 20
    nbdev_up: float = 2.0
    nbdev_dn: float = 2.0
    window: list[float] = field(default_factory=list)
    index: int = 0  # slot the next input overwrites once the window is full
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from `mean` over the window
    m2_err: float = 0.0  # bound on the rounding error m2 has gathered since the last recompute

    def __post_init__(self) -> None:
        _check(self.period, self.nbdev_up, self.nbdev_dn)

    def update(self, x: float) -> BbandsValue | None:
        window, n = self.window, self.period
        self.index, old = push(window, self.index, n, x)
        if old is None:
            if len(window) < n:
                return None
            self._recompute()
        else:
            delta = x - old
            new_mean = self.mean + delta / n
            step = delta * ((x - new_mean) + (old - self.mean))
            # Rounding of this step: the sum itself plus the deviations, each off by up to an ulp
            # of the prices involved (4x margin).
            self.m2_err += 4.0 * _EPS * (abs(self.m2) + abs(step) + abs(delta) * (
                abs(x) + abs(old) + 2.0 * abs(self.mean)))
            self.m2 += step
            self.mean = new_mean
            if self.index == 0 or self.m2_err > _M2_REL_TOL * self.m2:
                self._recompute()
        std = math.sqrt(self.m2 / n)
        return BbandsValue(self.mean + self.nbdev_up * std, self.mean,
                           self.mean - self.nbdev_dn * std)

    def _recompute(self) -> None:
        """Two passes over the buffer; the leftover error is a few ulps of m2 itself."""
        n = self.period
        self.mean = sum(self.window) / n
        self.m2 = sum((v - self.mean) ** 2 for v in self.window)
        self.m2_err = 4.0 * n * _EPS * self.m2


def bbands_batch(x: npt.ArrayLike, period: int = 20, nbdev_up: float = 2.0,
                 nbdev_dn: float = 2.0) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(upper, middle, lower) of a whole series; each NaN for the first period - 1 positions."""
    _check(period, nbdev_up, nbdev_dn)
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {xs.shape}")
    upper = np.full(xs.shape, np.nan)
    middle = np.full(xs.shape, np.nan)
    lower = np.full(xs.shape, np.nan)
    if xs.size >= period:
        windows = sliding_window_view(xs, period)
        mean = windows.mean(axis=1)
        std = np.sqrt(((windows - mean[:, None]) ** 2).mean(axis=1))
        middle[period - 1:] = mean
        upper[period - 1:] = mean + nbdev_up * std
        lower[period - 1:] = mean - nbdev_dn * std
    return upper, middle, lower
