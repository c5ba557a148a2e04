"""Candle-driven paper simulation of a bot (`intents.Bot`), with the shared fill model.

Timing, the same rule for every order: what the bot asks for while candle k is going on (on a
fill) or when it closes is placed at k's close, so it can trade from candle k+1 on. Market
orders fill at the open of the first candle at or after their placement (`PaperFillModel.
market`); limit orders are `triggers.RestingLimit`s filled by `PaperFillModel.fill`: taker at
the open when marketable on their first candle, else maker at the limit once a candle trades
through it. There is no second fill rule here.

Inside one candle the path is unknown. The simulation takes, in this order: market orders,
then limit orders that filled at the open (that price came first), then resting buys from the
highest down, then resting sells from the lowest up: the low before the high, the worse order
for these long-only bots (a safety order fills before a take-profit can). A fill is reported
to the bot at once and the cancels it answers with take effect at once, so an order the bot
cancelled on a fill cannot fill later in the same candle.

Every new order goes through `ExposureLimits` (when given) first; a refused one is recorded
with the rule it broke and reported to the bot (`on_rejected`). Cash and position are kept
exactly: a buy costs quantity x price + fee, a sell brings quantity x price - fee.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from meridian_common.fills import PaperFillModel, SimulatedFill
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
from meridian_common.triggers import Hit, RestingLimit

_MAX_REJECTION_DEPTH = 8  # a bot answering every refusal with a new order must not loop


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

    def run(self, bars: Iterable[Bar]) -> SimResult:
        equity: list[EquityPoint] = []
        for bar in bars:
            self.step(bar)
            value = MONEY_CONTEXT.add(self.cash, MONEY_CONTEXT.multiply(self.position, bar.close))
            equity.append(EquityPoint(bar.close_ms, self.position, self.cash, value))
        return SimResult(list(self.fills), list(self.refused), equity, list(self.placed))

    def step(self, bar: Bar) -> None:
        """One candle: fills in path order (module docstring), then the bot's close."""
        for entry in [o for o in self.open.values() if o.limit is None]:
            if entry.placed_ms <= bar.open_ms:
                sim = self.model.market(entry.order.side, entry.order.quantity, bar.open)
                self._filled(entry, sim, bar)
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
        for entry, hit in sorted(hits, key=_path_order):
            if entry.order.client_order_id in self.open:  # not cancelled by an earlier fill
                sim = self.model.fill(entry.order.side, entry.order.quantity, hit)
                self._filled(entry, sim, bar)
        self.last_price = bar.close
        self._apply(self.bot.on_candle(bar), bar.close_ms)

    def _filled(self, entry: _Open, sim: SimulatedFill, bar: Bar) -> None:
        order, ctx = entry.order, MONEY_CONTEXT
        del self.open[order.client_order_id]
        notional = ctx.multiply(order.quantity, sim.price)
        if order.side == BUY:
            self.position = ctx.add(self.position, order.quantity)
            self.cash = ctx.subtract(self.cash, ctx.add(notional, sim.fee))
        else:
            self.position = ctx.subtract(self.position, order.quantity)
            self.cash = ctx.add(self.cash, ctx.subtract(notional, sim.fee))
        fill = BotFill(order.client_order_id, order.side, order.quantity, sim.price, sim.fee,
                       sim.liquidity, bar.open_ms)
        self.fills.append(fill)
        self._apply(self.bot.on_fill(fill), bar.close_ms)

    def _apply(self, intents: list[Intent], placed_ms: int, depth: int = 0) -> None:
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
                if depth < _MAX_REJECTION_DEPTH:
                    self._apply(self.bot.on_rejected(coid, refusal.rule), placed_ms, depth + 1)
                continue
            self.used_ids.add(coid)
            self.placed.append(intent)
            limit = None if intent.limit_price is None else \
                RestingLimit(intent.side, intent.limit_price, placed_ms)
            self.open[coid] = _Open(intent, placed_ms, limit)


def _path_order(item: tuple[_Open, Hit[Decimal]]) -> tuple[int, Decimal]:
    """Fills at the open first, then buys from the highest limit, then sells from the lowest."""
    entry, hit = item
    assert entry.limit is not None
    if hit.at_open:
        return (0, ZERO)
    if entry.order.side == BUY:
        return (1, -entry.limit.limit)
    return (2, entry.limit.limit)
