"""Rate of change in percent: ROC = (x / x[n bars ago] - 1) * 100.

Warm-up (as TA-Lib): needs `period` earlier values, so the first output is at the (period+1)-th
input (lookback = period). Where the earlier value is exactly 0 the ratio is undefined; TA-Lib
returns 0.0 there (checked against talib.ROC) and so do both forms here.

Numerics: the formula is TA-Lib's, (x / prior - 1) * 100, evaluated with the same operations in
both forms, so they agree bit for bit with each other and with TA-Lib. (x - prior) / prior would
be slightly more accurate for tiny changes, but would no longer match TA-Lib exactly.
O(1) per update: a ring buffer of the last `period` inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meridian_common.indicators.ring import check_period, push


@dataclass(slots=True)
class Roc:
    period: int = 10
    window: list[float] = field(default_factory=list)  # last `period` inputs, ring buffer
    slot: int = 0  # where the oldest input sits once the ring is full

    def __post_init__(self) -> None:
        check_period("Roc", self.period)

    def update(self, x: float) -> float | None:
        self.slot, prior = push(self.window, self.slot, self.period, x)
        if prior is None:
            return None
        if prior == 0.0:
            return 0.0
        return (x / prior - 1.0) * 100.0


def roc_batch(x: npt.ArrayLike, period: int = 10) -> npt.NDArray[np.float64]:
    """ROC for a whole array; NaN for the first `period` positions."""
    check_period("Roc", period)
    values = np.asarray(x, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    if values.size <= period:
        return out
    prior = values[:-period]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[period:] = np.where(prior == 0.0, 0.0, (values[period:] / prior - 1.0) * 100.0)
    return out
