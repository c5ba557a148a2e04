"""Money flow index (MFI): RSI-like oscillator of volume-weighted typical-price moves, 0..100.

Definitions (as TA-Lib, checked against talib.MFI): typical price tp = (high + low + close) / 3,
money flow = tp * volume. A bar's flow is positive when tp rose from the previous bar, negative
when it fell, and counts for neither side when tp is unchanged. MFI = 100 * pos / (pos + neg)
over the last `period` flows; 0.0 when the window holds no flow at all (0/0).

Warm-up (as TA-Lib): a flow needs the previous bar, so `period` flows need period + 1 bars: the
first output is at the (period+1)-th input (lookback = period).

"Unchanged" uses a relative dead zone: |tp - prev_tp| <= 1e-14 * (|tp| + |prev_tp|) (about
90 ulps of tp) counts as no move. Candle prices are decimals; two bars whose high + low + close
are equal in decimal can differ in the last binary digit after the float sum and the division by
3, and an exact sign test would book the whole bar's money flow on one side because of that.
TA-Lib (C library 0.8) uses the same dead zone; the parity tests confirm it on real data.

Numerics: the incremental form keeps O(1) windowed sums (add the new flow, remove the one
leaving), compensated (Neumaier): a plain running sum keeps the rounding residue of every flow
that ever passed through it, which is large next to the true sum when big flows have just left
the window (TA-Lib's plain sums give MFI up to 6e-11 where the exact value is 0). The
compensation term keeps the sums within a few ulps of the exact window sums, and a count of the
non-zero flows on each side resets a side to exactly 0.0 when it has none. The batch form sums
each window directly (sliding windows). All flows are non-negative, so both are accurate to
~period ulps and agree to ~1e-15 relative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from meridian_common.indicators.ring import check_period, push

_DEAD_ZONE = 1e-14  # relative, see module docstring


def _neumaier(total: float, err: float, x: float) -> tuple[float, float]:
    """total + x, keeping the rounding error of the addition in `err` (exact TwoSum branch)."""
    t = total + x
    if abs(total) >= abs(x):
        err += (total - t) + x
    else:
        err += (x - t) + total
    return t, err


@dataclass(slots=True)
class Mfi:
    period: int = 14
    prev_tp: float | None = None
    pos_flows: list[float] = field(default_factory=list)  # ring buffers of the window's flows
    neg_flows: list[float] = field(default_factory=list)
    slot: int = 0  # oldest flow once the rings are full
    pos_sum: float = 0.0
    pos_err: float = 0.0  # compensation term: exact sum ~= pos_sum + pos_err
    neg_sum: float = 0.0
    neg_err: float = 0.0
    pos_count: int = 0  # non-zero flows in the window, per side
    neg_count: int = 0

    def __post_init__(self) -> None:
        check_period("Mfi", self.period, 2)

    def update(self, high: float, low: float, close: float, volume: float) -> float | None:
        tp = (high + low + close) / 3.0
        prev, self.prev_tp = self.prev_tp, tp
        if prev is None:
            return None
        change = tp - prev
        flow = 0.0 if abs(change) <= _DEAD_ZONE * (abs(tp) + abs(prev)) else tp * volume
        pos, neg = (0.0, flow) if change < 0.0 else (flow, 0.0)
        slot = self.slot
        self.slot, old_pos = push(self.pos_flows, slot, self.period, pos)
        _, old_neg = push(self.neg_flows, slot, self.period, neg)
        if old_pos is not None and old_neg is not None:
            self._move(old_pos, old_neg, -1)
        self._move(pos, neg, 1)
        if len(self.pos_flows) < self.period:
            return None
        pos_total = 0.0 if self.pos_count == 0 else self.pos_sum + self.pos_err
        neg_total = 0.0 if self.neg_count == 0 else self.neg_sum + self.neg_err
        total = pos_total + neg_total
        if total <= 0.0:
            return 0.0
        return 100.0 * (min(max(pos_total, 0.0), total) / total)

    def _move(self, pos: float, neg: float, sign: int) -> None:
        """Add (sign 1) or remove (sign -1) one bar's flows from the window sums."""
        if pos != 0.0:
            self.pos_count += sign
            if self.pos_count == 0:
                self.pos_sum = self.pos_err = 0.0  # nothing left: drop the rounding residue
            else:
                self.pos_sum, self.pos_err = _neumaier(self.pos_sum, self.pos_err, sign * pos)
        if neg != 0.0:
            self.neg_count += sign
            if self.neg_count == 0:
                self.neg_sum = self.neg_err = 0.0
            else:
                self.neg_sum, self.neg_err = _neumaier(self.neg_sum, self.neg_err, sign * neg)


def mfi_batch(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike,
              volume: npt.ArrayLike, period: int = 14) -> npt.NDArray[np.float64]:
    """MFI for whole arrays; NaN for the first `period` positions."""
    check_period("Mfi", period, 2)
    h, lo, c, v = (np.asarray(a, dtype=np.float64) for a in (high, low, close, volume))
    if not h.shape == lo.shape == c.shape == v.shape or h.ndim != 1:
        raise ValueError("high, low, close and volume must be 1-D of equal length")
    out = np.full(h.shape, np.nan)
    if h.size <= period:
        return out
    tp = (h + lo + c) / 3.0
    change = tp[1:] - tp[:-1]
    flat = np.abs(change) <= _DEAD_ZONE * (np.abs(tp[1:]) + np.abs(tp[:-1]))
    flow = np.where(flat, 0.0, tp[1:] * v[1:])
    pos = sliding_window_view(np.where(change < 0.0, 0.0, flow), period).sum(axis=1)
    neg = sliding_window_view(np.where(change < 0.0, flow, 0.0), period).sum(axis=1)
    total = pos + neg
    empty = total <= 0.0
    out[period:] = np.where(empty, 0.0, 100.0 * (pos / np.where(empty, 1.0, total)))
    return out
