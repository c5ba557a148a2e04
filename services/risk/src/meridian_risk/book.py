"""The gate's book: every position it approved, with its entry price, and the last price seen.

An approval counts in the book at once (paper market orders fill at once; a live order is
pending exposure until it fills or is canceled), so the gate is the single serialization point:
a burst of signals can never pass a limit together that only some of them fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian_common.money import MONEY_CONTEXT, ZERO


@dataclass(slots=True)
class Position:
    quantity: Decimal  # signed: > 0 long, < 0 short, never 0 (flat positions are removed)
    entry: Decimal  # average entry price of the open quantity


@dataclass(slots=True)
class Book:
    positions: dict[str, Position] = field(default_factory=dict)
    # Last reference price seen per key: what positions are valued at.
    marks: dict[str, Decimal] = field(default_factory=dict)

    def quantity(self, key: str) -> Decimal:
        pos = self.positions.get(key)
        return pos.quantity if pos else ZERO

    def apply(self, key: str, delta: Decimal, price: Decimal) -> None:
        """Book a fill of signed `delta` at `price` (adds average in; reductions keep the
        entry; a flip opens the remainder at `price`)."""
        pos = self.positions.get(key)
        current = pos.quantity if pos else ZERO
        target = current + delta
        if target == 0:
            self.positions.pop(key, None)
            return
        if pos is None or (current > 0) != (target > 0):
            self.positions[key] = Position(target, price)
        elif abs(target) > abs(current):
            cost = MONEY_CONTEXT.add(MONEY_CONTEXT.multiply(abs(current), pos.entry),
                                     MONEY_CONTEXT.multiply(abs(delta), price))
            self.positions[key] = Position(target, MONEY_CONTEXT.divide(cost, abs(target)))
        else:
            self.positions[key] = Position(target, pos.entry)

    def value(self, key: str, quantity: Decimal | None = None,
              mark: Decimal | None = None) -> Decimal:
        """|quantity| x mark of one key (defaults: the book's quantity and last mark)."""
        qty = self.quantity(key) if quantity is None else quantity
        if qty == 0:
            return ZERO
        if mark is None:
            pos = self.positions.get(key)
            mark = self.marks.get(key, pos.entry if pos else ZERO)
        price = mark
        return MONEY_CONTEXT.multiply(abs(qty), price)

    def others(self, key: str) -> list[tuple[str, Position]]:
        return [(k, p) for k, p in sorted(self.positions.items()) if k != key]
