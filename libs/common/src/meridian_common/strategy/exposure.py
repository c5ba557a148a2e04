"""Exposure limits a bot host applies to every new order before it leaves.

This is the paper simulation's stand-in for the risk gate (the service path sends the same
intents through the risk service): it shows that a cap holds whatever the bot asks for. The
check is worst-case: a buy counts as if every buy already resting or pending filled too, so
no order that passes can later take the position over the cap, whichever of them fill. Sells
only reduce a long position and are checked only for selling more than is held (spot: no
shorts), counting the sells already resting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from meridian_common.money import MONEY_CONTEXT, ZERO, to_str
from meridian_common.strategy.intents import BUY, PlaceOrder

MAX_POSITION = "max_position"
MAX_NOTIONAL = "max_notional"
SELL_EXCEEDS_POSITION = "sell_exceeds_position"


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class ExposureLimits:
    """max_position: base quantity; max_notional: quote value of that worst-case position at
    the order's price (its limit, or the last close for a market order). None: no cap."""

    max_position: Decimal | None = None
    max_notional: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("max_position", "max_notional"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def check(self, order: PlaceOrder, position: Decimal, open_orders: Iterable[PlaceOrder],
              last_price: Decimal) -> Refusal | None:
        """The first rule `order` breaks, or None when it may go out."""
        same_side = sum((o.quantity for o in open_orders if o.side == order.side), ZERO)
        ctx = MONEY_CONTEXT
        if order.side != BUY:
            committed = ctx.add(same_side, order.quantity)
            if committed > position:
                return Refusal(SELL_EXCEEDS_POSITION, f"sells {to_str(committed)} > position "
                                                      f"{to_str(position)}")
            return None
        worst = ctx.add(ctx.add(position, same_side), order.quantity)
        if self.max_position is not None and worst > self.max_position:
            return Refusal(MAX_POSITION, f"worst-case position {to_str(worst)} > "
                                         f"{to_str(self.max_position)}")
        at = order.limit_price if order.limit_price is not None else last_price
        notional = ctx.multiply(worst, at)
        if self.max_notional is not None and notional > self.max_notional:
            return Refusal(MAX_NOTIONAL, f"worst-case notional {to_str(notional)} > "
                                         f"{to_str(self.max_notional)}")
        return None
