"""Candle-driven paper simulation of a bot (`intents.Bot`), with the shared fill model.

Timing, the bots host's rule (`meridian_signals.bots.handler`) for every answer of the bot:
what it asks for while candle k is going on (to a fill) or when k closes (`on_candle`), places
AND cancels alike, takes effect at k's close, after every fill of candle k, so it acts from
candle k+1 on. On the bus the paper executor has evaluated the whole candle before the bot
hears its fills, so an order the bot cancels on a fill can still fill later in the same candle
(the bot must handle that fill: `dca.DcaBot` takes a replaced take-profit's fill as a partial
exit); the simulation does the same, so both give the same fills for any candles. What the bot
answers to a refusal of an order placed at k's close (`on_rejected`, heard before the fills of
candle k+1) takes effect at k+1's close, as on the bus, ahead of the answers to k+1's fills.

Market orders fill at the open of the first candle at or after their placement (`PaperFillModel.
market`); limit orders are `triggers.RestingLimit`s filled by `PaperFillModel.fill`: taker at
the open when marketable on their first candle, else maker at the limit once a candle trades
through it. There is no second fill rule here.

Inside one candle the path is unknown. The simulation takes, in this order: market orders,
then limit orders that filled at the open (that price came first), then resting buys from the
highest down, then resting sells from the lowest up: the low before the high, the worse order
for these long-only bots (a safety order fills before a take-profit can); `triggers.path_order`,
the key the paper executor sorts its fills by too. The fills are reported to the bot one by one
in that order.

A sell is reduce-only, as the bots host sends it (the bots are long-only on spot): it fills for
at most the position held at that point of the path (a smaller fill, the rest cancelled) and
not at all when there is none (dropped, and the bot is not told: the host does not read the
executor's order events either).

Every new order goes through `ExposureLimits` (when given) first; a refused one is recorded
with the rule it broke and reported to the bot (`on_rejected`). Cash and position are kept
exactly: a buy costs quantity x price + fee, a sell brings quantity x price - fee.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from meridian_common.fills import PaperFillModel
from meridian_common.money import MONEY_CONTEXT, ZERO
from meridian_common.strategy.exposure import ExposureLimits
from meridian_common.strategy.intents import (
    BUY,
    Bar,
    Bot,
    BotFill,
    CancelOrder,
    Intent,
    PlaceOrder,
)
from meridian_common.triggers import Hit, RestingLimit, path_order


@dataclass(frozen=True, slots=True)
class Refused:
    time_ms: int
    client_order_id: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """After candle `close_ms`: position, cash and their value at the close."""

    close_ms: int
    position: Decimal
    cash: Decimal
    equity: Decimal


@dataclass(frozen=True, slots=True)
class SimResult:
    fills: list[BotFill]
    refused: list[Refused]
    equity: list[EquityPoint]
    placed: list[PlaceOrder]

    @property
    def position(self) -> Decimal:
        return self.equity[-1].position if self.equity else ZERO

    @property
    def cash(self) -> Decimal:
        return self.equity[-1].cash if self.equity else ZERO


@dataclass(slots=True)
class _Open:
    order: PlaceOrder
    placed_ms: int
    limit: RestingLimit[Decimal] | None  # None: a market order


@dataclass(slots=True)
class BotSimulation:
    """Runs one bot over candles (rules: module docstring)."""

    bot: Bot
    model: PaperFillModel = field(default_factory=PaperFillModel)
    limits: ExposureLimits | None = None
    cash: Decimal = ZERO
    position: Decimal = ZERO
    open: dict[str, _Open] = field(default_factory=dict)
    fills: list[BotFill] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    placed: list[PlaceOrder] = field(default_factory=list)
    used_ids: set[str] = field(default_factory=set)
    last_price: Decimal = ZERO
    # answers to refusals at the last close: they go out at the next close, as on the bus
    pending: list[Intent] = field(default_factory=list)

    def run(self, bars: Iterable[Bar]) -> SimResult:
        equity: list[EquityPoint] = []
        for bar in bars:
            self.step(bar)
            value = MONEY_CONTEXT.add(self.cash, MONEY_CONTEXT.multiply(self.position, bar.close))
            equity.append(EquityPoint(bar.close_ms, self.position, self.cash, value))
        return SimResult(list(self.fills), list(self.refused), equity, list(self.placed))

    def step(self, bar: Bar) -> None:
        """One candle: every fill in path order, then all the bot's answers at the close."""
        answers, self.pending = self.pending, []
        for entry in [o for o in self.open.values() if o.limit is None]:
            if entry.placed_ms <= bar.open_ms:
                answers += self._filled(entry, None, bar)
        hits: list[tuple[_Open, Hit[Decimal]]] = []
        for entry in [o for o in self.open.values() if o.limit is not None]:
            assert entry.limit is not None
            hit, after = entry.limit.on_candle(bar.open_ms, bar.open, bar.high, bar.low)
            if hit is not None:
                hits.append((entry, hit))
            elif after is None:
                del self.open[entry.order.client_order_id]  # expired (no bot sets expiry yet)
            else:
                entry.limit = after
        for entry, hit in sorted(hits, key=_path_key):
            answers += self._filled(entry, hit, bar)
        self.last_price = bar.close
        answers += self.bot.on_candle(bar)
        self._apply(answers, bar.close_ms)

    def _filled(self, entry: _Open, hit: Hit[Decimal] | None, bar: Bar) -> list[Intent]:
        """Fill `entry` (a market order when `hit` is None); the bot's answer, not yet applied."""
        order, ctx = entry.order, MONEY_CONTEXT
        del self.open[order.client_order_id]
        quantity = order.quantity
        if order.side != BUY:  # reduce-only: capped to the position, nothing when flat
            quantity = min(quantity, self.position)
            if quantity <= 0:
                return []
        sim = self.model.market(order.side, quantity, bar.open) if hit is None else \
            self.model.fill(order.side, quantity, hit)
        notional = ctx.multiply(quantity, sim.price)
        if order.side == BUY:
            self.position = ctx.add(self.position, quantity)
            self.cash = ctx.subtract(self.cash, ctx.add(notional, sim.fee))
        else:
            self.position = ctx.subtract(self.position, quantity)
            self.cash = ctx.add(self.cash, ctx.subtract(notional, sim.fee))
        fill = BotFill(order.client_order_id, order.side, quantity, sim.price, sim.fee,
                       sim.liquidity, bar.open_ms)
        self.fills.append(fill)
        return self.bot.on_fill(fill)

    def _apply(self, intents: list[Intent], placed_ms: int) -> None:
        """Place and cancel in the bot's order; a refusal is told to the bot at once, and its
        answer waits for the next close (`pending`)."""
        for intent in intents:
            if isinstance(intent, CancelOrder):
                self.open.pop(intent.client_order_id, None)  # gone already: filled or refused
                continue
            coid = intent.client_order_id
            if coid in self.used_ids:
                raise ValueError(f"bot {self.bot.bot_id} reused client order id {coid!r}")
            refusal = None if self.limits is None else self.limits.check(
                intent, self.position, (o.order for o in self.open.values()), self.last_price)
            if refusal is not None:
                self.refused.append(Refused(placed_ms, coid, refusal.rule, refusal.detail))
                self.pending += self.bot.on_rejected(coid, refusal.rule)
                continue
            self.used_ids.add(coid)
            self.placed.append(intent)
            limit = None if intent.limit_price is None else \
                RestingLimit(intent.side, intent.limit_price, placed_ms)
            self.open[coid] = _Open(intent, placed_ms, limit)


def _path_key(item: tuple[_Open, Hit[Decimal]]) -> tuple[int, Decimal]:
    """`triggers.path_order`, the one rule the paper executor sorts its fills by too."""
    entry, hit = item
    assert entry.limit is not None
    return path_order(entry.order.side, entry.limit.limit, hit)
