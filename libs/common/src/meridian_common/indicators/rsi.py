"""Relative strength index with Wilder's smoothing.

Warm-up (as TA-Lib): needs `period` price changes, i.e. period + 1 inputs; the first averages are
simple means of the first `period` gains and losses, later ones are smoothed as
avg = (avg * (period - 1) + change) / period.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Rsi:
    period: int
    count: int = 0
    prev: float | None = None
    avg_gain: float = 0.0
    avg_loss: float = 0.0
    value: float | None = None

    def __post_init__(self) -> None:
        if self.period < 2:
            raise ValueError(f"Rsi.period must be >= 2, got {self.period}")

    def update(self, x: float) -> float | None:
        prev, self.prev = self.prev, x
        if prev is None:
            return None
        self.count += 1
        change = x - prev
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        n = self.period
        if self.count < n:
            self.avg_gain += gain
            self.avg_loss += loss
            return None
        if self.count == n:
            self.avg_gain = (self.avg_gain + gain) / n
            self.avg_loss = (self.avg_loss + loss) / n
        else:
            self.avg_gain = (self.avg_gain * (n - 1) + gain) / n
            self.avg_loss = (self.avg_loss * (n - 1) + loss) / n
        total = self.avg_gain + self.avg_loss
        self.value = 0.0 if total == 0 else 100.0 * self.avg_gain / total
        return self.value
