"""DCA bot: buy, buy more lower down, sell everything a little above the average price.

A cycle: on a closed candle (the first one, or the first after the cooldown) the bot buys
`base_quote` worth at market (quantity = base_quote / that close, down to the lot). When the
base order fills at price P it places up to `max_safety_orders` buy limits below it, safety
order n at the cumulative deviation d_n = deviation x (1 + s + s^2 + ... + s^(n-1)) (s =
`step_scale`), price P x (1 - d_n) rounded down to the tick, worth safety_quote x v^(n-1)
(v = `volume_scale`) at that price. After every buy fill the average entry price is recomputed
exactly (sum of quantity x price over the sum of the quantities, fees excluded, as the
exchanges show it, kept to 1e-12) and the take-profit, a sell limit for the whole position at
average x (1 + take_profit) rounded up to the tick, is cancelled and placed again. The
take-profit fill ends the cycle: the safety orders still resting are cancelled and the next
cycle starts after `cooldown_candles` closed candles.

Optional stop: a close at or below average x (1 - stop_loss) cancels everything and sells the
position at market (the next open). The bot decides on closes only, like every candle-driven
rule here; the paper fill model says where the orders fill.

Client order ids: `<bot>-<cycle>-b` (base), `-s<n>` (safety n), `-tp<k>` (k-th take-profit of
the cycle), `-sl` (stop): a replay gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian_common.money import MONEY_CONTEXT, ONE, ZERO, price
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

MAX_SAFETY_ORDERS = 50


@dataclass(frozen=True, slots=True)
class DcaParams:
    """A DCA bot's configuration (fractions: 0.01 = 1 %); every error names its field."""

    bot_id: str
    rules: MarketRules
    base_quote: Decimal
    safety_quote: Decimal
    deviation: Decimal
    take_profit: Decimal
    max_safety_orders: int
    step_scale: Decimal = ONE
    volume_scale: Decimal = ONE
    stop_loss: Decimal | None = None
    cooldown_candles: int = 0
    max_cycles: int | None = None

    def __post_init__(self) -> None:
        check_bot_id(self.bot_id)
        for name in ("base_quote", "safety_quote", "step_scale", "volume_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.deviation < 1:
            raise ValueError(f"deviation must be a fraction in (0, 1), got {self.deviation}")
        if not 0 < self.take_profit < 1:
            raise ValueError(f"take_profit must be a fraction in (0, 1), got {self.take_profit}")
        if not 0 <= self.max_safety_orders <= MAX_SAFETY_ORDERS:
            raise ValueError(f"max_safety_orders must be in [0, {MAX_SAFETY_ORDERS}], got "
                             f"{self.max_safety_orders}")
        if self.max_safety_orders and cumulative_deviation(self, self.max_safety_orders) >= 1:
            raise ValueError(f"deviation {self.deviation} with step_scale {self.step_scale} puts "
                             f"safety order {self.max_safety_orders} at or below price zero")
        if self.stop_loss is not None and not 0 < self.stop_loss < 1:
            raise ValueError(f"stop_loss must be a fraction in (0, 1), got {self.stop_loss}")
        if self.cooldown_candles < 0:
            raise ValueError(f"cooldown_candles must be >= 0, got {self.cooldown_candles}")
        if self.max_cycles is not None and self.max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1, got {self.max_cycles}")


def cumulative_deviation(params: DcaParams, n: int) -> Decimal:
    """d_n = deviation x (1 + s + ... + s^(n-1)): how far below the base fill safety n sits."""
    ctx, total, term = MONEY_CONTEXT, ZERO, params.deviation
    for _ in range(n):
        total = ctx.add(total, term)
        term = ctx.multiply(term, params.step_scale)
    return total


@dataclass(frozen=True, slots=True)
class SafetyOrder:
    number: int
    price: Decimal
    quantity: Decimal


def safety_orders(params: DcaParams, base_price: Decimal) -> list[SafetyOrder]:
    """The safety orders below a base fill at `base_price` (rules: module docstring); one
    whose quantity rounds to nothing or breaks the market rules is left out."""
    ctx, out = MONEY_CONTEXT, []
    quote = params.safety_quote
    for n in range(1, params.max_safety_orders + 1):
        raw = ctx.multiply(base_price, ctx.subtract(ONE, cumulative_deviation(params, n)))
        limit = params.rules.round_price(raw, side=BUY)
        quantity = params.rules.round_qty(ctx.divide(quote, limit))
        if not params.rules.valid(quantity, limit):
            out.append(SafetyOrder(n, limit, quantity))
        quote = ctx.multiply(quote, params.volume_scale)
    return out


@dataclass(frozen=True, slots=True)
class Cycle:
    """A finished cycle: its buys, its exit and the profit after every fee."""

    number: int
    buys: int
    quantity: Decimal
    average: Decimal
    exit_price: Decimal
    fees: Decimal
    profit: Decimal
    reason: str  # "take_profit" or "stop_loss"
    closed_ms: int


@dataclass(slots=True)
class DcaBot:
    """The DCA state machine (rules: module docstring)."""

    params: DcaParams
    cycle: int = 1
    phase: str = "idle"  # idle -> entering -> holding -> (exiting) -> idle
    cooldown_left: int = 0
    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    fees: Decimal = ZERO
    buys: int = 0
    tp_count: int = 0
    take_profit_order: str | None = None
    safety: dict[str, SafetyOrder] = field(default_factory=dict)
    cycles: list[Cycle] = field(default_factory=list)

    @property
    def bot_id(self) -> str:
        return self.params.bot_id

    @property
    def average(self) -> Decimal:
        """Average entry price of the open position (fees excluded), to 1e-12."""
        return price(MONEY_CONTEXT.divide(self.cost, self.quantity)) if self.quantity else ZERO

    def take_profit_price(self) -> Decimal:
        factor = MONEY_CONTEXT.add(ONE, self.params.take_profit)
        return self.params.rules.round_price(MONEY_CONTEXT.multiply(self.average, factor),
                                             side=SELL)

    # -- events -------------------------------------------------------------------------------

    def on_candle(self, bar: Bar) -> list[Intent]:
        if self.phase == "idle":
            return self._enter(bar.close)
        if self.phase == "holding":
            if self._stopped(bar.close):
                return self._stop()
            if self.take_profit_order is None:
                return self._replace_take_profit()
        return []

    def on_fill(self, fill: BotFill) -> list[Intent]:
        coid, ids = fill.client_order_id, self._ids()
        if coid == ids["base"] or coid in self.safety:
            self.safety.pop(coid, None)
            return self._bought(fill, first=coid == ids["base"])
        if coid == self.take_profit_order:
            return self._close(fill, "take_profit")
        if coid == ids["stop"]:
            return self._close(fill, "stop_loss")
        return []

    def on_rejected(self, client_order_id: str, reason: str) -> list[Intent]:
        """A refused base order leaves the bot idle (it tries again on the next candle); a
        refused safety order is dropped; a refused take-profit is placed again next candle."""
        if client_order_id == self._ids()["base"]:
            self.phase = "idle"
        self.safety.pop(client_order_id, None)
        if client_order_id == self.take_profit_order:
            self.take_profit_order = None
        return []

    # -- helpers ------------------------------------------------------------------------------

    def _ids(self) -> dict[str, str]:
        return {"base": order_id(self.bot_id, self.cycle, "b"),
                "stop": order_id(self.bot_id, self.cycle, "sl")}

    def _enter(self, close: Decimal) -> list[Intent]:
        p = self.params
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return []
        if p.max_cycles is not None and self.cycle > p.max_cycles:
            return []
        quantity = p.rules.round_qty(MONEY_CONTEXT.divide(p.base_quote, close))
        if quantity <= 0:
            return []
        self.phase = "entering"
        return [PlaceOrder(self._ids()["base"], BUY, quantity, None, "dca-base")]

    def _bought(self, fill: BotFill, first: bool) -> list[Intent]:
        ctx = MONEY_CONTEXT
        self.quantity = ctx.add(self.quantity, fill.quantity)
        self.cost = ctx.add(self.cost, ctx.multiply(fill.quantity, fill.price))
        self.fees = ctx.add(self.fees, fill.fee)
        self.buys += 1
        self.phase = "holding"
        intents: list[Intent] = []
        if first:
            for order in safety_orders(self.params, fill.price):
                coid = order_id(self.bot_id, self.cycle, f"s{order.number}")
                self.safety[coid] = order
                intents.append(PlaceOrder(coid, BUY, order.quantity, order.price,
                                          f"dca-safety-{order.number}"))
        return intents + self._replace_take_profit()

    def _replace_take_profit(self) -> list[Intent]:
        intents: list[Intent] = []
        if self.take_profit_order is not None:
            intents.append(CancelOrder(self.take_profit_order))
        self.tp_count += 1
        self.take_profit_order = order_id(self.bot_id, self.cycle, f"tp{self.tp_count}")
        intents.append(PlaceOrder(self.take_profit_order, SELL, self.quantity,
                                  self.take_profit_price(), "dca-take-profit"))
        return intents

    def _stopped(self, close: Decimal) -> bool:
        sl = self.params.stop_loss
        if sl is None or not self.quantity:
            return False
        return close <= MONEY_CONTEXT.multiply(self.average, MONEY_CONTEXT.subtract(ONE, sl))

    def _stop(self) -> list[Intent]:
        intents: list[Intent] = [CancelOrder(coid) for coid in sorted(self.safety)]
        if self.take_profit_order is not None:
            intents.append(CancelOrder(self.take_profit_order))
        self.safety.clear()
        self.take_profit_order = None
        self.phase = "exiting"
        intents.append(PlaceOrder(self._ids()["stop"], SELL, self.quantity, None, "dca-stop"))
        return intents

    def _close(self, fill: BotFill, reason: str) -> list[Intent]:
        ctx = MONEY_CONTEXT
        fees = ctx.add(self.fees, fill.fee)
        proceeds = ctx.multiply(fill.quantity, fill.price)
        profit = ctx.subtract(ctx.subtract(proceeds, self.cost), fees)
        self.cycles.append(Cycle(self.cycle, self.buys, self.quantity, self.average, fill.price,
                                 fees, profit, reason, fill.time_ms))
        intents: list[Intent] = [CancelOrder(coid) for coid in sorted(self.safety)]
        self.cycle += 1
        self.phase, self.cooldown_left = "idle", self.params.cooldown_candles
        self.quantity = self.cost = self.fees = ZERO
        self.buys = self.tp_count = 0
        self.take_profit_order = None
        self.safety.clear()
        return intents
