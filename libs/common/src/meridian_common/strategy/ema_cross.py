"""EMA-cross trend rule with an RSI filter.

Long when the fast EMA crosses above the slow one, unless RSI says the move is already
overbought (then the entry is skipped and the reason recorded). When the fast EMA crosses below,
go short if shorts are allowed, else close (flat). Strength is the EMA separation relative to the
slow EMA, saturating at `full_strength_gap`.

Inputs are the feature set's columns (`ema_ratio` = fast / slow - 1, `rsi`), so research, replay
and live read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from meridian.v1 import common_pb2
from meridian_common.strategy.vote import Vote


@dataclass(frozen=True, slots=True)
class EmaCrossParams:
    rsi_overbought: float = 70.0
    allow_short: bool = False
    full_strength_gap: float = 0.01

    def __post_init__(self) -> None:
        if not 50.0 < self.rsi_overbought <= 100.0:
            raise ValueError(f"rsi_overbought must be in (50, 100], got {self.rsi_overbought}")
        if self.full_strength_gap <= 0:
            raise ValueError(f"full_strength_gap must be > 0, got {self.full_strength_gap}")


@dataclass(slots=True)
class EmaCross:
    """Per-symbol rule state: the side the fast EMA was on at the last decisive bar."""

    params: EmaCrossParams
    side: int = 0  # +1 fast above slow, -1 below, 0 unknown

    def update(self, ema_ratio: float, rsi: float) -> Vote | None:
        side = 1 if ema_ratio > 0.0 else -1 if ema_ratio < 0.0 else 0
        previous = self.side
        if side == 0 or side == previous:
            return None
        self.side = side
        if previous == 0:
            return None  # first decisive bar: no cross observed yet
        strength = min(1.0, abs(ema_ratio) / self.params.full_strength_gap)
        gap = f"{abs(ema_ratio) * 100:.3f} %"
        if side > 0:
            if rsi >= self.params.rsi_overbought:
                return None
            return Vote(common_pb2.DIRECTION_LONG, strength,
                        f"ema fast crossed above slow by {gap}; rsi {rsi:.1f}")
        direction = (common_pb2.DIRECTION_SHORT if self.params.allow_short
                     else common_pb2.DIRECTION_FLAT)
        return Vote(direction, strength, f"ema fast crossed below slow by {gap}; rsi {rsi:.1f}")
