"""Which stops protect a position: one rule for the paper executor, the risk gate's book and the
backtests, so all of them close the same position on the same candle.

An order that opens a position, flips it, or (not reduce-only) adds to it brings its own
stop-loss, take-profit, trailing stop and (isolated margin above 1x) leverage: they protect the
whole position from then on (`Guard`). An order that only reduces it keeps the protection it
had; a position back to zero has none. The guard is checked with the shared
`meridian_common.triggers` rules from the first candle whose open is at or after the order (a
market order fills at that open), so the executor, which fills, and the risk gate, which only
books the approval, agree on where a position ends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from meridian_common import ids, triggers
from meridian_common.money import ONE, ZERO, dec

Change = Literal["new", "keep", "none"]


def change(before: Decimal, after: Decimal, reduce_only: bool) -> Change:
    """What happens to a position's protection when an order moves it from before to after."""
    if after == ZERO:
        return "none"
    flipped = before == ZERO or (before > 0) != (after > 0)
    if flipped or (not reduce_only and abs(after) > abs(before)):
        return "new"
    return "keep"


@dataclass(slots=True)
class Guard:
    """The protection of one open position, candle by candle: its exits, the trailing state and,
    for an isolated leveraged position, its liquidation price.

    The trailing stop and the liquidation price are anchored at the open of the first candle
    checked (the executor's fill price without slippage), which the executor and the gate both
    know. The liquidation is `margin.liquidation_price_isolated` at that entry: a candle that
    reaches it before the stop (a gap through both) closes the position there, and the
    maintenance margin left at that price is the liquidation fee, so the loss is the margin.
    """

    exits: triggers.Exits[Decimal]
    from_ms: int  # the first candle open it is checked on
    cause: str  # the client order id that set it
    leverage: Decimal | None = None  # isolated margin above 1x: liquidation is checked
    mmr: Decimal = ZERO
    trail: triggers.Trail[Decimal] | None = None
    entry: Decimal | None = None  # the open of the first candle checked

    def on_candle(self, open_ms: int, open_: Decimal, high: Decimal,
                  low: Decimal) -> triggers.Hit[Decimal] | None:
        if open_ms < self.from_ms:
            return None
        if self.entry is None:
            self.entry = open_
            if self.exits.trailing is not None:
                self.trail = triggers.Trail(open_)
            if self.leverage is not None:
                side = "long" if self.exits.long else "short"
                liq = triggers.isolated_liquidation(side, open_, ONE, self.leverage, self.mmr)
                self.exits = replace(self.exits, liquidation=liq.price)
        hit, self.trail = triggers.step(self.exits, self.trail, open_, high, low)
        return hit

    def liquidation_fee(self, quantity: Decimal) -> Decimal | None:
        """The maintenance margin left at the liquidation price (None without leverage)."""
        if self.leverage is None or self.entry is None:
            return None
        side = "long" if self.exits.long else "short"
        return triggers.isolated_liquidation(side, self.entry, abs(quantity), self.leverage,
                                             self.mmr).margin_left


def guard(long: bool, stop_loss: str, take_profit: str, trailing_stop: str, leverage: str,
          maintenance_margin_rate: str, *, from_ms: int, cause: str) -> Guard | None:
    """The guard an opening order's fields set (None when it sets nothing); ValueError names a
    malformed or misplaced value."""
    lev = dec(leverage, "leverage") if leverage else None
    if lev is not None and lev <= ONE:
        lev = None  # 1x isolated: nothing to liquidate above a price of 0
    if not stop_loss and not take_profit and not trailing_stop and lev is None:
        return None
    exits = triggers.Exits(
        "long" if long else "short",
        stop_loss=dec(stop_loss, "stop_loss") if stop_loss else None,
        take_profit=dec(take_profit, "take_profit") if take_profit else None,
        trailing=dec(trailing_stop, "trailing_stop") if trailing_stop else None)
    mmr = dec(maintenance_margin_rate, "maintenance_margin_rate") \
        if maintenance_margin_rate else ZERO
    return Guard(exits, from_ms, cause, lev, mmr)


def exit_order_id(cause: str, reason: str) -> str:
    """The client order id of the exit a triggered stop makes (the same everywhere)."""
    return ids.client_order_id(f"{cause}:{reason}")
