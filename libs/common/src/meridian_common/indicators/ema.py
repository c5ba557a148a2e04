"""Exponential moving average.

Warm-up (as TA-Lib): the first value is the simple mean of the first `period` inputs; after that
ema += k * (x - ema) with k = 2 / (period + 1). Outputs start at the `period`-th input.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Ema:
    period: int
    count: int = 0
    seed_sum: float = 0.0
    value: float | None = None

    def __post_init__(self) -> None:
        if self.period < 1:
            raise ValueError(f"Ema.period must be >= 1, got {self.period}")

    @property
    def k(self) -> float:
        return 2.0 / (self.period + 1)

    def update(self, x: float) -> float | None:
        self.count += 1
        if self.value is None:
            self.seed_sum += x
            if self.count < self.period:
                return None
            self.value = self.seed_sum / self.period
            return self.value
        self.value = (x - self.value) * self.k + self.value
        return self.value
