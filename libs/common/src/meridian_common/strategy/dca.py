"""DCA bot: buy, buy more lower down, sell everything a little above the average price.

A cycle: on a closed candle (the first one, or the first after the cooldown) the bot buys
`base_quote` worth at market (quantity = base_quote / that close, down to the lot). When the
base order fills at price P it places up to `max_safety_orders` buy limits below it, safety
order n at the cumulative deviation d_n = deviation x (1 + s + s^2 + ... + s^(n-1)) (s =
`step_scale`), price P x (1 - d_n) rounded down to the tick, worth safety_quote x v^(n-1)
(v = `volume_scale`) at that price. After every buy fill the average entry price is recomputed
exactly (cost over quantity held, fees excluded, as the exchanges show it, kept to 1e-12) and
the take-profit, a sell limit for the whole position at average x (1 + take_profit) rounded up
to the tick, is cancelled and placed again. The sell that empties the position ends the cycle:
the safety orders still resting are cancelled and the next cycle starts after
`cooldown_candles` closed candles.

Optional stop: a close at or below average x (1 - stop_loss) cancels everything and sells the
position at market (the next open). The bot decides on closes only, like every candle-driven
rule here; the paper fill model says where the orders fill.

Fills the bot did not plan, and why it must take them. Its host applies what it answers to a
fill (cancels too) only at the candle's close (`bot_sim`, the bots host), so one candle can fill
a safety order AND the take-profit that safety fill replaced; sells are reduce-only, so a sell
for more than is held fills only the held part; a cancel the risk gate refuses leaves an order
resting into later candles or cycles. The bot keeps its position equal to its fills:
- every sell fill of its own (a replaced take-profit, the current one, a stop, even an earlier
  cycle's) is an exit of the position at its price: quantity and cost go down at the average
  entry (cost x what is left / what was held, exact to MONEY_CONTEXT), the proceeds and the fee
  count in the cycle. Position 0: the cycle ends (reason "stop_loss" when a stop sold last,
  else "take_profit"), the rest is cancelled. Otherwise the take-profit is placed again for
  what is left (the current one cancelled); after a stop that sold only part, the next close
  decides again (a new stop, or a take-profit when the price is back above the stop). A sell
  while the bot holds nothing is not its position (the executor refuses such a reduce-only
  sell; another strategy holds the symbol) and is ignored; of a sell for more than the bot
  holds, only what it holds is counted.
- every buy fill of its own adds to the position. One it did not expect (a safety order of a
  cycle that ended, its cancel refused or too late) is kept, never lost: while a cycle holds a
  position it is one more buy of that cycle (the take-profit moves); when idle it starts the
  next cycle with that position as its base (no safety ladder: there was no base fill to hang
  it from, only a take-profit and the stop), even past `max_cycles` or in the cooldown; while
  the base order is out it joins the base, whose fill places the take-profit for both.

Client order ids: `<bot>-<cycle>-b` (base), `-s<n>` (safety n), `-tp<k>` (k-th take-profit of
the cycle), `-sl` (stop; `-sl<k>` for the k-th when a stop had to be asked for again): a replay
gives the same ids.
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
    """A finished cycle: its buys, its exits and the profit after every fee.

    quantity: everything bought; average: the average buy price (all buys, to 1e-12);
    exit_price: the average sell price (the take-profit's own price when one sell closed it);
    reason: how the last sell came ("take_profit" or "stop_loss")."""

    number: int
    buys: int
    quantity: Decimal
    average: Decimal
    exit_price: Decimal
    fees: Decimal
    profit: Decimal
    reason: str
    closed_ms: int


@dataclass(slots=True)
class DcaBot:
    """The DCA state machine (rules: module docstring)."""

    params: DcaParams
    cycle: int = 1
    phase: str = "idle"  # idle -> entering -> holding -> (exiting) -> idle
    cooldown_left: int = 0
    quantity: Decimal = ZERO  # held now
    cost: Decimal = ZERO  # of what is held, at the average entry
    bought: Decimal = ZERO  # in the cycle, for its record
    spent: Decimal = ZERO
    sold: Decimal = ZERO
    proceeds: Decimal = ZERO
    fees: Decimal = ZERO
    buys: int = 0
    tp_count: int = 0
    stop_count: int = 0
    take_profit_order: str | None = None
    # every sell order of the cycle (take-profits, replaced or not, and stops) -> its reason
    exits: dict[str, str] = field(default_factory=dict)
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
        """Any fill of the bot's own orders moves its position (module docstring)."""
        coid = fill.client_order_id
        if not coid.startswith(self.bot_id + "-"):
            return []
        if fill.side == BUY:
            first = coid == self._ids()["base"] and self.phase == "entering"
            self.safety.pop(coid, None)
            return self._bought(fill, first)
        return self._sold(fill)

    def on_rejected(self, client_order_id: str, reason: str) -> list[Intent]:
        """A refused base order leaves the bot idle (it tries again on the next candle) unless
        it holds a position already; a refused safety order is dropped; a refused take-profit
        or stop is decided again on the next candle."""
        if client_order_id == self._ids()["base"] and self.phase == "entering":
            self.phase = "holding" if self.quantity else "idle"
        self.safety.pop(client_order_id, None)
        if client_order_id == self.take_profit_order:
            self.take_profit_order = None
        if self.exits.get(client_order_id) == "stop_loss" and self.phase == "exiting":
            self.phase = "holding"
        return []

    # -- helpers ------------------------------------------------------------------------------

    def _ids(self) -> dict[str, str]:
        return {"base": order_id(self.bot_id, self.cycle, "b")}

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
        notional = ctx.multiply(fill.quantity, fill.price)
        self.quantity = ctx.add(self.quantity, fill.quantity)
        self.cost = ctx.add(self.cost, notional)
        self.bought = ctx.add(self.bought, fill.quantity)
        self.spent = ctx.add(self.spent, notional)
        self.fees = ctx.add(self.fees, fill.fee)
        self.buys += 1
        if self.phase in ("entering", "exiting") and not first:
            # joins the base (whose fill places the take-profit) or what the stop leaves
            return []
        self.phase = "holding"
        intents: list[Intent] = []
        if first:
            for order in safety_orders(self.params, fill.price):
                coid = order_id(self.bot_id, self.cycle, f"s{order.number}")
                self.safety[coid] = order
                intents.append(PlaceOrder(coid, BUY, order.quantity, order.price,
                                          f"dca-safety-{order.number}"))
        return intents + self._replace_take_profit()

    def _sold(self, fill: BotFill) -> list[Intent]:
        held = self.quantity
        if held <= 0:
            return []  # not the bot's position (module docstring)
        ctx = MONEY_CONTEXT
        sold = min(fill.quantity, held)
        self.sold = ctx.add(self.sold, sold)
        self.proceeds = ctx.add(self.proceeds, ctx.multiply(sold, fill.price))
        self.fees = ctx.add(self.fees, fill.fee)
        if sold == held:
            return self._close(fill, self.exits.get(fill.client_order_id, "take_profit"))
        self.quantity = ctx.subtract(held, sold)
        self.cost = ctx.divide(ctx.multiply(self.cost, self.quantity), held)
        if self.phase == "exiting":
            self.phase = "holding"  # the stop sold only part: the next close decides again
            return []
        return self._replace_take_profit()

    def _replace_take_profit(self) -> list[Intent]:
        intents: list[Intent] = []
        if self.take_profit_order is not None:
            intents.append(CancelOrder(self.take_profit_order))
        self.tp_count += 1
        self.take_profit_order = order_id(self.bot_id, self.cycle, f"tp{self.tp_count}")
        self.exits[self.take_profit_order] = "take_profit"
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
        self.stop_count += 1
        coid = order_id(self.bot_id, self.cycle,
                        "sl" if self.stop_count == 1 else f"sl{self.stop_count}")
        self.exits[coid] = "stop_loss"
        intents.append(PlaceOrder(coid, SELL, self.quantity, None, "dca-stop"))
        return intents

    def _close(self, fill: BotFill, reason: str) -> list[Intent]:
        ctx = MONEY_CONTEXT
        profit = ctx.subtract(ctx.subtract(self.proceeds, self.spent), self.fees)
        self.cycles.append(Cycle(self.cycle, self.buys, self.bought,
                                 price(ctx.divide(self.spent, self.bought)),
                                 price(ctx.divide(self.proceeds, self.sold)), self.fees, profit,
                                 reason, fill.time_ms))
        intents: list[Intent] = [CancelOrder(coid) for coid in sorted(self.safety)]
        current = self.take_profit_order
        if current is not None and current != fill.client_order_id:  # an older one sold last
            intents.append(CancelOrder(current))
        self.cycle += 1
        self.phase, self.cooldown_left = "idle", self.params.cooldown_candles
        self.quantity = self.cost = self.bought = self.spent = ZERO
        self.sold = self.proceeds = self.fees = ZERO
        self.buys = self.tp_count = self.stop_count = 0
        self.take_profit_order = None
        self.exits.clear()
        self.safety.clear()
        return intents
