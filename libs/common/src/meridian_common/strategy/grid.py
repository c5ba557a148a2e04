"""Spot grid bot: buy low and sell one level higher, over and over, inside a price range.

Levels: `levels` prices from `lower` to `upper` (both included), each rounded to the tick
(nearest). Arithmetic spacing puts equal price steps between them, geometric spacing equal
ratios (level i = lower x (upper/lower)^(i/(levels-1))), so a grid over a wide range earns the
same percentage per step at the bottom as at the top. Both are defined for any integer index,
which is what the trailing variant uses when it moves the grid.

State: the grid is a row of slots; slot j spans level j to level j+1 and is either waiting to
buy (a buy limit at level j) or holding its quantity and waiting to sell (a sell limit at level
j+1). A buy fill flips the slot to sell one level up, a sell fill back to buy one level down;
each buy-then-sell is a round trip earning quantity x (level j+1 - level j) minus both fees.
Slots are independent, so it does not matter in which order a candle's fills are reported.

Start (first closed candle, price = its close): slots whose buy level is below the price wait
to buy; the others wait to sell and, with `initial_buy`, one market buy gets their inventory
(without it they wait to buy until the price is above them). The level nearest above the price
is left empty, as on the exchanges' grid bots.

Orders are placed only on the right side of the last close (a buy below it, a sell above it),
nearest the price first, so a slot that could not be placed yet is placed on a later candle;
one whose order was refused (risk limits) waits for the bot's next fill, the only event that
changes its exposure, before it tries again. Bounded grid: while the close is outside the
range no new order is placed (the resting ones stay; a fill's reaction is always inside the
range).

Trailing ("infinity") variant: a close above the top shifts the grid up one level (the lowest
buy is cancelled, a new slot waits to buy at the old top); with `trailing_down` a close below
the bottom shifts it down (the highest sell is cancelled and its inventory waits to sell at the
old bottom); at most `max_shifts` shifts in all, one per candle. A shift needs the slot it
drops to be in the expected state (buying when moving up, selling when moving down), so no
inventory is ever abandoned.

Client order ids: `<bot>-<level>-<seq>` (`<bot>-init-<seq>` for the start market buy), level
the absolute level index (negative `n<abs>`), seq the bot's order counter: a replay gives the
same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Literal

from meridian_common.money import MONEY_CONTEXT, ZERO
from meridian_common.sizing import MarketRules
from meridian_common.strategy.intents import (
    BUY,
    SELL,
    Bar,
    BotFill,
    CancelOrder,
    Intent,
    PlaceOrder,
    check_bot_id,
    order_id,
)

Spacing = Literal["arithmetic", "geometric"]
MAX_LEVELS = 500


@dataclass(frozen=True, slots=True)
class GridParams:
    """A grid's configuration; every error names the field it is about.

    quantity: base quantity per slot (a multiple of the lot), or quote: quote currency per
    slot (the quantity is quote / buy level, rounded down to the lot); exactly one of them.
    """

    bot_id: str
    lower: Decimal
    upper: Decimal
    levels: int
    rules: MarketRules
    spacing: Spacing = "arithmetic"
    quantity: Decimal | None = None
    quote: Decimal | None = None
    initial_buy: bool = True
    trailing_up: bool = False
    trailing_down: bool = False
    max_shifts: int = 0

    def __post_init__(self) -> None:
        check_bot_id(self.bot_id)
        if not self.lower > 0:
            raise ValueError(f"lower must be positive, got {self.lower}")
        if not self.upper > self.lower:
            raise ValueError(f"upper ({self.upper}) must be above lower ({self.lower})")
        if not 2 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in [2, {MAX_LEVELS}], got {self.levels}")
        if self.spacing not in ("arithmetic", "geometric"):
            raise ValueError(f"spacing: expected 'arithmetic' or 'geometric', got "
                             f"{self.spacing!r}")
        self._check_sizing()
        if (self.trailing_up or self.trailing_down) != (self.max_shifts > 0):
            raise ValueError(f"max_shifts ({self.max_shifts}) must be > 0 exactly when "
                             "trailing_up or trailing_down is set")
        prices = [level_price(self, i) for i in range(self.levels)]
        for below, above in pairwise(prices):
            if not above > below:
                raise ValueError(f"levels: {self.levels} levels between {self.lower} and "
                                 f"{self.upper} are closer than the tick {self.rules.tick}")
        for i in range(self.levels - 1):
            problems = self.rules.valid(slot_quantity(self, i), prices[i])
            if problems:
                name = "quantity" if self.quantity is not None else "quote"
                raise ValueError(f"{name}: the slot at level {i} ({prices[i]}) is not a valid "
                                 f"order: {'; '.join(problems)}")

    def _check_sizing(self) -> None:
        if (self.quantity is None) == (self.quote is None):
            raise ValueError("quantity or quote: set exactly one of them")
        if self.quantity is not None and not self.quantity > 0:
            raise ValueError(f"quantity must be positive, got {self.quantity}")
        if self.quote is not None and not self.quote > 0:
            raise ValueError(f"quote must be positive, got {self.quote}")


def level_price(params: GridParams, index: int) -> Decimal:
    """The price of level `index` (0 = lower, levels-1 = upper; others for a moved grid),
    rounded to the nearest tick."""
    ctx, steps = MONEY_CONTEXT, Decimal(params.levels - 1)
    if params.spacing == "arithmetic":
        step = ctx.divide(ctx.subtract(params.upper, params.lower), steps)
        raw = ctx.add(params.lower, ctx.multiply(step, Decimal(index)))
    else:
        ratio = ctx.divide(params.upper, params.lower)
        raw = ctx.multiply(params.lower, ctx.power(ratio, ctx.divide(Decimal(index), steps)))
    if raw <= 0:
        raise ValueError(f"level {index} of the grid is at or below zero ({raw})")
    return params.rules.round_price(raw, mode="nearest")


def slot_quantity(params: GridParams, index: int) -> Decimal:
    """The base quantity the slot buying at level `index` trades."""
    if params.quantity is not None:
        return params.rules.round_qty(params.quantity)
    assert params.quote is not None
    return params.rules.round_qty(MONEY_CONTEXT.divide(params.quote, level_price(params, index)))


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """A slot's buy and the sell one level up that closed it."""

    level: int
    quantity: Decimal
    buy_price: Decimal
    sell_price: Decimal
    fees: Decimal
    profit: Decimal
    closed_ms: int


@dataclass(slots=True)
class _Slot:
    index: int
    quantity: Decimal
    selling: bool
    order: str | None = None
    bought: BotFill | None = None
    awaiting_inventory: bool = False
    refused: bool = False


@dataclass(slots=True)
class GridBot:
    """The grid state machine (rules: module docstring)."""

    params: GridParams
    offset: int = 0
    shifts: int = 0
    seq: int = 0
    started: bool = False
    slots: dict[int, _Slot] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)  # client order id -> slot index
    init_order: str | None = None
    round_trips: list[RoundTrip] = field(default_factory=list)

    @property
    def bot_id(self) -> str:
        return self.params.bot_id

    def level_prices(self) -> list[Decimal]:
        """The current grid's level prices, lowest first."""
        return [level_price(self.params, self.offset + i) for i in range(self.params.levels)]

    # -- events -------------------------------------------------------------------------------

    def on_candle(self, bar: Bar) -> list[Intent]:
        if not self.started:
            return self._start(bar.close)
        intents, shifted = self._shift(bar.close)
        prices = self.level_prices()
        if shifted or prices[0] <= bar.close <= prices[-1]:
            intents += self._place_idle(bar.close)
        return intents

    def on_fill(self, fill: BotFill) -> list[Intent]:
        for slot in self.slots.values():
            slot.refused = False  # a fill changes the exposure: refused slots may try again
        if fill.client_order_id == self.init_order:
            self.init_order = None
            for slot in self.slots.values():
                slot.awaiting_inventory = False
            return []  # the sells go out on the next candle, above its close
        index = self.orders.pop(fill.client_order_id, None)
        if index is None or index not in self.slots:
            return []
        slot = self.slots[index]
        slot.order = None
        if fill.side == BUY:
            slot.selling, slot.bought = True, fill
        else:
            self._record_round_trip(slot, fill)
            slot.selling, slot.bought = False, None
        return [self._place(slot)]

    def on_rejected(self, client_order_id: str, reason: str) -> list[Intent]:
        """Forget the order; the slot is retried on a later candle. A refused start buy turns
        the slots that waited for it into buying slots."""
        if client_order_id == self.init_order:
            self.init_order = None
            for slot in self.slots.values():
                if slot.awaiting_inventory:
                    slot.selling, slot.awaiting_inventory = False, False
            return []
        index = self.orders.pop(client_order_id, None)
        if index is not None and index in self.slots:
            self.slots[index].order = None
            self.slots[index].refused = True
        return []

    # -- helpers ------------------------------------------------------------------------------

    def _start(self, close: Decimal) -> list[Intent]:
        self.started = True
        p = self.params
        for i in range(p.levels - 1):
            selling = p.initial_buy and level_price(p, i) >= close
            self.slots[i] = _Slot(i, slot_quantity(p, i), selling, awaiting_inventory=selling)
        intents: list[Intent] = []
        inventory = sum((s.quantity for s in self.slots.values() if s.awaiting_inventory), ZERO)
        if inventory > 0:
            self.seq += 1
            self.init_order = order_id(p.bot_id, "init", self.seq)
            intents.append(PlaceOrder(self.init_order, BUY, inventory, None, "grid-init"))
        return intents + self._place_idle(close)

    def _place(self, slot: _Slot) -> PlaceOrder:
        level = slot.index + 1 if slot.selling else slot.index
        self.seq += 1
        coid = order_id(self.params.bot_id, level, self.seq)
        slot.order = coid
        self.orders[coid] = slot.index
        side = SELL if slot.selling else BUY
        return PlaceOrder(coid, side, slot.quantity, level_price(self.params, level),
                          "grid-sell" if slot.selling else "grid-buy")

    def _place_idle(self, close: Decimal) -> list[Intent]:
        """Orders for the slots without one, nearest the price first (when a limit lets only
        some through, those are the ones that trade soonest)."""
        todo: list[tuple[Decimal, int]] = []
        for index, slot in self.slots.items():
            if slot.order is not None or slot.awaiting_inventory or slot.refused:
                continue
            level = level_price(self.params, index + 1 if slot.selling else index)
            if (level > close) if slot.selling else (level < close):
                todo.append((abs(level - close), index))
        return [self._place(self.slots[index]) for _, index in sorted(todo)]

    def _record_round_trip(self, slot: _Slot, sell: BotFill) -> None:
        buy = slot.bought
        if buy is None:  # inventory from the start buy: no buy level to measure against
            return
        ctx = MONEY_CONTEXT
        fees = ctx.add(buy.fee, sell.fee)
        gross = ctx.multiply(sell.quantity, ctx.subtract(sell.price, buy.price))
        self.round_trips.append(RoundTrip(slot.index, sell.quantity, buy.price, sell.price, fees,
                                          ctx.subtract(gross, fees), sell.time_ms))

    def _shift(self, close: Decimal) -> tuple[list[Intent], bool]:
        """Move the grid one level towards a price that left it (trailing variant only)."""
        p = self.params
        if self.shifts >= p.max_shifts:
            return [], False
        prices = self.level_prices()
        if p.trailing_up and close > prices[-1]:
            return self._move(self.offset, self.offset + p.levels - 1, up=True)
        if p.trailing_down and close < prices[0]:
            return self._move(self.offset + p.levels - 2, self.offset - 1, up=False)
        return [], False

    def _move(self, drop: int, add: int, up: bool) -> tuple[list[Intent], bool]:
        """Drop slot `drop` (it must be buying when moving up, selling when moving down) and
        add slot `add` on the other end; the new slot keeps a dropped seller's inventory."""
        old = self.slots[drop]
        if old.selling != (not up) or old.awaiting_inventory:
            return [], False
        intents: list[Intent] = []
        if old.order is not None:
            intents.append(CancelOrder(old.order))
            self.orders.pop(old.order, None)
        del self.slots[drop]
        quantity = slot_quantity(self.params, add) if up else old.quantity
        self.slots[add] = _Slot(add, quantity, selling=not up,
                                bought=None if up else old.bought)
        self.offset += 1 if up else -1
        self.shifts += 1
        return intents, True
