"""Which stops protect a position: one rule for the paper executor, the risk gate's book and the
backtests, so all of them close the same position on the same candle.

An order that opens a position, flips it, or (not reduce-only) adds to it brings its own
stop-loss and take-profit: they protect the whole position from then on. An order that only
reduces it keeps the protection it had; a position back to zero has none. The stops (and a trailing
stop, from the open of the first candle checked) are checked by `check` (the shared
`meridian_common.triggers` rules) from the first candle whose open is at or after the order
(a market order fills at that open), so the executor, which fills, and the risk gate, which
only books the approval, agree on where a position ends.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from meridian_common import ids, triggers
from meridian_common.money import ZERO, dec

Change = Literal["new", "keep", "none"]


def change(before: Decimal, after: Decimal, reduce_only: bool) -> Change:
    """What happens to a position's protection when an order moves it from before to after."""
    if after == ZERO:
        return "none"
    flipped = before == ZERO or (before > 0) != (after > 0)
    if flipped or (not reduce_only and abs(after) > abs(before)):
        return "new"
    return "keep"


def exits(long: bool, stop_loss: str, take_profit: str,
          trailing_stop: str = "") -> triggers.Exits[Decimal] | None:
    """The exits an order's stop-loss / take-profit / trailing-stop strings set (None when it
    has none); ValueError names a malformed or misplaced value."""
    if not stop_loss and not take_profit and not trailing_stop:
        return None
    return triggers.Exits(
        "long" if long else "short",
        stop_loss=dec(stop_loss, "stop_loss") if stop_loss else None,
        take_profit=dec(take_profit, "take_profit") if take_profit else None,
        trailing=dec(trailing_stop, "trailing_stop") if trailing_stop else None)


def check(exits: triggers.Exits[Decimal], trail: triggers.Trail[Decimal] | None,
          open_: Decimal, high: Decimal,
          low: Decimal) -> tuple[triggers.Hit[Decimal] | None, triggers.Trail[Decimal] | None]:
    """One candle of a protected position: the hit (or None) and the trailing state for the
    next candle. A trailing stop starts from the open of the first candle checked (the
    executor's fill price without slippage), which both the executor and the gate know."""
    if exits.trailing is not None and trail is None:
        trail = triggers.Trail(open_)
    return triggers.step(exits, trail, open_, high, low)


def exit_order_id(cause: str, reason: str) -> str:
    """The client order id of the exit a triggered stop makes (the same everywhere)."""
    return ids.client_order_id(f"{cause}:{reason}")
