"""Intrabar trigger rules: one implementation for the paper executor, the backtests and the labels.

A candle says where the price opened, how far it went each way and where it closed, never in
which order the high and the low came. Every rule here decides from that much and no more, and
when the order matters it takes the outcome that is worse for us. The functions are written
over plain numbers (`Num`: float or Decimal, never mixed) so that the executor calls them with
exact Decimals and the research code with floats, and both get the same decision.

Protective exits of an open position (`Exits`, decided per candle by `check` / `step`):
- Stops (stop-loss, trailing stop, liquidation) trigger on a touch: a long's stop fires when the
  low reaches it (low <= stop), a short's when the high does. They are stop-market orders, so
  taker fills, slipped like market orders (`PaperFillModel.fill`).
- Gap: a candle that opens at or beyond a stop exits at the open, worse than the stop: the stop
  order becomes a market order at the first price there is.
- Take-profit is a resting reduce-only limit: a maker fill at its own price, never better. Like
  every resting limit it fills only when the price trades *through* it (long: high > TP): a
  touch does not prove our place in the queue was reached. A candle that opens beyond the
  take-profit fills it at the take-profit price, not at the better open: the limit was resting
  and, in a 24/7 market, the price went through it between the previous close and this open,
  where the order filled at its own price. (labels.py always did this.)
- Both a stop and the take-profit inside one candle's range: the stop wins, because the path
  inside the candle is unknown. The only point of the path that is known is the open, so a
  candle that opens beyond the take-profit has filled it before anything else happens in it,
  and a candle that opens beyond a stop has stopped out before it could reach the take-profit.
- Several stops inside one candle: the one nearest the entry side (a long's highest) is the
  first the price meets on the way down, so it is the exit. At the same price the liquidation
  comes first (the exchange does not wait for our stop), then the stop-loss, then the trailing
  stop.
- Trailing stop: a distance as a fraction of the best price since entry (a long's highest
  high, a short's lowest low, the entry price included). The level used on candle k comes from
  the best price up to candle k-1 and is checked against candle k's low (high); only then is
  the best price updated with candle k's high (low). A candle's own high is never used for its
  own low check, because nothing says the high came first. The state is `Trail`, one number a
  caller keeps per position and can rebuild by replaying the candles since entry.
- Liquidation (`Exits.liquidation`: for an isolated position from `isolated_liquidation`, for a
  cross position the caller's `margin.liquidation_price_cross`) is checked like a stop, with
  one difference: a candle that opens beyond it (a gap through the stop and the liquidation)
  exits *at the liquidation price*, not at the open. The exchange takes the position over
  there and an isolated position cannot lose more than its margin: the fill is recorded at the
  liquidation price and `isolated_liquidation(...).margin_left` (the maintenance margin still
  there at that price) is charged as the liquidation fee, so the loss is exactly the initial
  margin, however far the price gapped.

Limit orders (`RestingLimit`, per candle by `RestingLimit.on_candle`):
- placed with event time t, an order is first eligible on the first candle whose open time is
  >= t (the order cannot trade on a candle that started before it existed);
- on that first candle, an open at or through the limit (buy: open <= limit) makes it
  marketable: it fills at once at the open as a taker (slipped, never past the limit);
- otherwise it rests and fills as a maker at the limit price on the first candle (the first
  eligible one included) that trades through it (buy: low < limit); a touch is not a fill;
- optional expiry: unfilled after `expires_after` eligible candles, it is cancelled;
- no partial fills: the whole quantity fills on the crossing candle. The candle's volume says
  nothing about how much traded at our price after our place in the queue; partial fills are
  modelled on the live path only.
- several limit orders filling on one candle are taken in `path_order`: the fills at the open
  first (that price came first), then the buys from the highest limit down, then the sells from
  the lowest limit up. The path inside the candle is unknown; low before high is the worse order
  for a long book (a buy further down fills before a take-profit above can). The paper executor
  and the bots' simulation both sort by it, so their fills (and what reacts to them) agree.

Nothing here reads anything but the candle it is given (and the state from earlier candles).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Final, Generic, Literal, NamedTuple, TypeVar

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.margin import Side, liquidation_price_isolated, maintenance_margin
from meridian_common.money import MONEY_CONTEXT, ONE

Num = TypeVar("Num", float, Decimal)
Reason = Literal["stop_loss", "take_profit", "trailing_stop", "liquidation", "limit"]

STOP_LOSS: Final = "stop_loss"
TAKE_PROFIT: Final = "take_profit"
TRAILING_STOP: Final = "trailing_stop"
LIQUIDATION: Final = "liquidation"
LIMIT: Final = "limit"

MAKER: Final = fill_pb2.LIQUIDITY_MAKER
TAKER: Final = fill_pb2.LIQUIDITY_TAKER


def is_long(side: Side) -> bool:
    """A position side: 'long'/'short' or DIRECTION_LONG/DIRECTION_SHORT (as in margin.py)."""
    if side in ("long", common_pb2.DIRECTION_LONG):
        return True
    if side in ("short", common_pb2.DIRECTION_SHORT):
        return False
    raise ValueError(f"side: expected 'long'/'short' or DIRECTION_LONG/DIRECTION_SHORT, "
                     f"got {side!r}")


@dataclass(frozen=True, slots=True)
class Hit(Generic[Num]):
    """A triggered order on one candle, before slippage and fees (`PaperFillModel.fill`).

    price: the level that was hit, or the candle's open when the order became executable at the
    open (`at_open`: a gap through a stop, a marketable limit order).
    limit: for limit orders, the worst price the order accepts (slippage stops there).
    """

    price: Num
    reason: Reason
    liquidity: int
    at_open: bool = False
    limit: Num | None = None


@dataclass(frozen=True, slots=True)
class Trail(Generic[Num]):
    """Trailing-stop state of one position: the best price since entry, entry included.

    Immutable: `after` gives the state for the next candle, so the executor keeps one per
    position and rebuilds it by replaying the candles since entry (`Trail.replay`).
    """

    best: Num

    def after(self, long: bool, high: Num, low: Num) -> Trail[Num]:
        """The state once this candle is over: the best price moved by its high (long) or low."""
        if long:
            return self if high <= self.best else Trail(high)
        return self if low >= self.best else Trail(low)

    def level(self, long: bool, distance: Num) -> Num:
        """The stop level for the next candle: `distance` (a fraction) back from the best."""
        if isinstance(self.best, Decimal):
            factor = (MONEY_CONTEXT.subtract(ONE, distance) if long
                      else MONEY_CONTEXT.add(ONE, distance))
            return MONEY_CONTEXT.multiply(self.best, factor)
        return self.best * (1.0 - distance) if long else self.best * (1.0 + distance)

    @classmethod
    def replay(cls, long: bool, entry: Num, bars: Iterable[tuple[Num, Num]]) -> Trail[Num]:
        """The state after the given (high, low) candles since entry, entry candle first."""
        state: Trail[Num] = cls(entry)
        for high, low in bars:
            state = state.after(long, high, low)
        return state


@dataclass(frozen=True, slots=True)
class Exits(Generic[Num]):
    """The protective exits of one open position; `None` means the exit is not set.

    side: the position's side ('long'/'short' or DIRECTION_*).
    stop_loss, take_profit, liquidation: prices. A level at or below zero never triggers (a
    long's far stop, a short's far take-profit, the 0 liquidation price of a long whose cross
    account covers a fall to zero): levels are not checked for sign, only for their order.
    trailing: the trailing distance as a fraction of the best price, in (0, 1); `check` then
    needs the position's `Trail`.
    """

    side: Side
    stop_loss: Num | None = None
    take_profit: Num | None = None
    trailing: Num | None = None
    liquidation: Num | None = None
    long: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "long", is_long(self.side))
        if self.trailing is not None and not 0 < self.trailing < 1:
            raise ValueError(f"trailing must be a fraction in (0, 1), got {self.trailing}")
        sl, tp = self.stop_loss, self.take_profit
        if sl is not None and tp is not None and ((sl >= tp) if self.long else (sl <= tp)):
            raise ValueError(f"stop_loss {sl} must be on the loss side of take_profit {tp} "
                             f"for a {'long' if self.long else 'short'}")

    @property
    def closing_side(self) -> int:
        """The order side that closes the position (SIDE_SELL for a long)."""
        return common_pb2.SIDE_SELL if self.long else common_pb2.SIDE_BUY


def _first_stop(exits: Exits[Num], trail: Trail[Num] | None) -> tuple[Num, Reason] | None:
    """The stop-type level the price meets first on its way against the position (a long's
    highest); on a tie the liquidation, then the stop-loss, then the trailing stop."""
    long = exits.long
    first, reason = exits.liquidation, LIQUIDATION
    sl = exits.stop_loss
    if sl is not None and (first is None or (sl > first if long else sl < first)):
        first, reason = sl, STOP_LOSS
    if exits.trailing is not None:
        if trail is None:
            raise ValueError("a trailing stop needs the position's Trail state")
        level = trail.level(long, exits.trailing)
        if first is None or (level > first if long else level < first):
            first, reason = level, TRAILING_STOP
    return None if first is None else (first, reason)


def check(exits: Exits[Num], open_: Num, high: Num, low: Num,
          trail: Trail[Num] | None = None) -> Hit[Num] | None:
    """Does this candle close the position, at what price and why? (rules: module docstring)

    `trail` is the state up to the previous candle (`Trail(entry)` on the entry candle); the
    candle's close is not needed: nothing triggers at the close.
    """
    long = exits.long
    tp = exits.take_profit
    stop = _first_stop(exits, trail)
    if stop is not None:
        level, reason = stop
        if (open_ <= level) if long else (open_ >= level):  # opened at or beyond a stop
            liq = exits.liquidation
            if liq is not None and ((open_ <= liq) if long else (open_ >= liq)):
                return Hit(liq, LIQUIDATION, TAKER)
            return Hit(open_, reason, TAKER, at_open=True)
        if tp is not None and ((open_ > tp) if long else (open_ < tp)):
            return Hit(tp, TAKE_PROFIT, MAKER)  # went through the take-profit before the open
        if (low <= level) if long else (high >= level):
            return Hit(level, reason, TAKER)  # also when the take-profit is in range: stop first
    if tp is not None and ((high > tp) if long else (low < tp)):
        return Hit(tp, TAKE_PROFIT, MAKER)
    return None


def step(exits: Exits[Num], trail: Trail[Num] | None, open_: Num, high: Num,
         low: Num) -> tuple[Hit[Num] | None, Trail[Num] | None]:
    """`check` this candle, then the trailing state for the next one (None without a trail)."""
    hit = check(exits, open_, high, low, trail)
    return hit, (trail.after(exits.long, high, low) if trail is not None else None)


class Liquidation(NamedTuple):
    """An isolated position's liquidation price and the margin still there at that price."""

    price: Decimal
    margin_left: Decimal


def isolated_liquidation(side: Side, entry: Decimal, quantity: Decimal, leverage: Decimal,
                         mmr: Decimal) -> Liquidation:
    """`margin.liquidation_price_isolated`, and the maintenance margin left at that price.

    At the liquidation price the position's equity is its maintenance margin; the exchange
    keeps it, so charging `margin_left` as the liquidation fee makes the whole initial margin
    the loss (see `PaperFillModel.fill`).
    """
    price = liquidation_price_isolated(side, entry, quantity, leverage, mmr)
    return Liquidation(price, maintenance_margin(MONEY_CONTEXT.multiply(quantity, entry), mmr))


@dataclass(frozen=True, slots=True)
class RestingLimit(Generic[Num]):
    """A limit order waiting for its fill, one candle at a time (rules: module docstring).

    side: SIDE_BUY or SIDE_SELL; placed_ms: the order's event time; expires_after: cancelled
    when still unfilled after that many eligible candles (None: good till cancelled);
    seen: eligible candles already passed without a fill (0 until the first one).
    """

    side: int
    limit: Num
    placed_ms: int
    expires_after: int | None = None
    seen: int = 0

    def __post_init__(self) -> None:
        if self.side not in (common_pb2.SIDE_BUY, common_pb2.SIDE_SELL):
            raise ValueError(f"side: expected SIDE_BUY or SIDE_SELL, got {self.side!r}")
        if not self.limit > 0:
            raise ValueError(f"limit must be positive, got {self.limit}")
        if self.expires_after is not None and self.expires_after < 1:
            raise ValueError(f"expires_after must be >= 1 candle, got {self.expires_after}")

    def on_candle(self, open_ms: int, open_: Num, high: Num,
                  low: Num) -> tuple[Hit[Num] | None, RestingLimit[Num] | None]:
        """(the fill on this candle or None, the order after it: None once filled or expired).

        A candle that opened before the order was placed leaves it untouched.
        """
        if open_ms < self.placed_ms:
            return None, self
        buy, limit = self.side == common_pb2.SIDE_BUY, self.limit
        if self.seen == 0 and ((open_ <= limit) if buy else (open_ >= limit)):
            return Hit(open_, LIMIT, TAKER, at_open=True, limit=limit), None
        if (low < limit) if buy else (high > limit):
            return Hit(limit, LIMIT, MAKER, limit=limit), None
        seen = self.seen + 1
        if self.expires_after is not None and seen >= self.expires_after:
            return None, None
        return None, replace(self, seen=seen)


def path_order(side: int, limit: Num, hit: Hit[Num]) -> tuple[int, Num]:
    """Sort key of a limit order's fill inside its candle (module docstring, "Limit orders").

    Fills at the open come first and keep the order they are given in (sort with the stable
    `sorted`, in placement order), then buys from the highest limit down, then sells from the
    lowest limit up; equal limits keep the placement order too.
    """
    if hit.at_open:
        return (0, limit * 0)
    if side == common_pb2.SIDE_BUY:
        return (1, -limit)
    return (2, limit)
