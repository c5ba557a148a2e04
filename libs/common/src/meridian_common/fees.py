"""Fee model: one place that knows what trading costs (paper fills, backtests, research)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meridian.v1 import fill_pb2
from meridian_common.money import cash


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Rates as fractions of notional (0.001 = 10 bps)."""

    maker: Decimal = Decimal("0.001")
    taker: Decimal = Decimal("0.001")

    def __post_init__(self) -> None:
        for name in ("maker", "taker"):
            rate = getattr(self, name)
            if not Decimal("-0.01") <= rate <= Decimal("0.01"):
                raise ValueError(f"fee {name} rate {rate} is outside [-1 %, 1 %]")

    def fee(self, quantity: Decimal, price: Decimal, liquidity: int) -> Decimal:
        rate = self.maker if liquidity == fill_pb2.LIQUIDITY_MAKER else self.taker
        return cash(abs(quantity) * price * rate)
