"""The bots host's own Prometheus series (docs/observability.md, "bots").

Labels are bounded by the bots file: `bot` is a configured bot_id (a fixed set, read before the
start), `action`, `side` and `kind` come from fixed sets. Every label value exists at 0 from
`bind_metrics`, so a `rate()` over a bot that has not traded yet returns data.

Counters count what the host does as it does it, never while the host rebuilds its state from
the inputs (`Handler.replaying`): the rebuild at every start replays everything the bots ever
heard, so counting it would count every intent and fill again after each restart.

The two per-bot gauges describe state instead, so they are moved during the rebuild too (and
zeroed with the state by `reset`): after a restart they read what they read before it, without
waiting for the next trade. They follow the orders as the host knows them, from what it tells
and hears from the bot, not from the exchange (order.event.v1 is not an input):
- open orders: a place intent opens a client order id; a cancel intent, the gate's refusal told
  to the bot, or the order's first fill closes it. The first fill, not the sum of fills, because
  the bots take every fill as their order's last (a reduce-only sell the executor capped to the
  position arrives as one smaller fill and ends the order); a refused cancel, which the gate
  never decides, would leave an order resting that the gauge no longer counts.
- position: the base quantity of the bot's fills, buys minus sells (all of its fills, also one
  of an order the bot had already replaced, since that one traded on the account too).
A float copy of the Decimal quantity, for observation only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge

from meridian_common.metrics import Children
from meridian_common.strategy.intents import BUY, SELL, BotFill, CancelOrder, Intent
from meridian_signals.bots.spec import BotSpec

PLACE, CANCEL = "place", "cancel"
ACTIONS = (PLACE, CANCEL)
SIDES = {BUY: "buy", SELL: "sell"}
KINDS = ("grid", "dca", "funding-arb")
ZERO = Decimal(0)


@dataclass(slots=True)
class _Book:
    """One bot's orders and position as the host knows them (module docstring)."""

    open: set[str] = field(default_factory=set)
    position: Decimal = ZERO


class BotsMetrics:
    """The series, registered once in the registry the host exposes, and the per-bot books the
    gauges are set from."""

    def __init__(self, registry: CollectorRegistry, specs: Sequence[BotSpec]) -> None:
        self.intents = Counter(
            "meridian_bots_intents_total", "Order intents published on order.intent.v1, per "
            "bot and action (place, cancel).", ["bot", "action"], registry=registry)
        self.refused = Counter(
            "meridian_bots_orders_refused_total", "Place intents of the bot the risk gate "
            "refused (the refusal told to the bot).", ["bot"], registry=registry)
        self.fills = Counter(
            "meridian_bots_fills_total", "Fills of the bot's orders told to the bot, per side.",
            ["bot", "side"], registry=registry)
        self.open_orders = Gauge(
            "meridian_bots_open_orders", "The bot's orders placed and not yet filled, "
            "cancelled or refused, as the host knows them.", ["bot"], registry=registry)
        self.position = Gauge(
            "meridian_bots_position_base", "Base quantity the bot holds from its own fills "
            "(buys minus sells; a hedged pair's legs net out: 0 when hedged).", ["bot"],
            registry=registry)
        self.configured = Gauge(
            "meridian_bots_configured", "Bots in the bots file, per kind.", ["kind"],
            registry=registry)
        self._intents, self._fills = Children(self.intents), Children(self.fills)
        self._refused = Children(self.refused)
        self._open, self._position = Children(self.open_orders), Children(self.position)
        self.bots = tuple(s.bot_id for s in specs)
        self.books: dict[str, _Book] = {}
        for bot in self.bots:
            for action in ACTIONS:
                self._intents(bot, action)
            for side in SIDES.values():
                self._fills(bot, side)
            self._refused(bot)
        for kind in KINDS:
            self.configured.labels(kind).set(sum(1 for s in specs if s.kind == kind))
        self.reset()

    def reset(self) -> None:
        """Every book empty and its gauges 0: the handler's state was reset (`reset_state`), and
        the rebuild that follows moves them back."""
        self.books = {bot: _Book() for bot in self.bots}
        for bot in self.bots:
            self._observe(bot)

    def sent(self, bot: str, intents: Iterable[Intent], *, count: bool) -> None:
        """The intents published for the bot at one candle's close, in the bot's order."""
        book = self.books[bot]
        for intent in intents:
            cancel = isinstance(intent, CancelOrder)
            if cancel:
                book.open.discard(intent.client_order_id)
            else:
                book.open.add(intent.client_order_id)
            if count:
                self._intents(bot, CANCEL if cancel else PLACE).inc()
        self._observe(bot)

    def rejected(self, bot: str, client_order_id: str, *, count: bool) -> None:
        """The gate's refusal of a place intent, as it is told to the bot."""
        self.books[bot].open.discard(client_order_id)
        if count:
            self._refused(bot).inc()
        self._observe(bot)

    def filled(self, bot: str, fill: BotFill, *, count: bool) -> None:
        """A fill of the bot's order, as it is told to the bot."""
        book = self.books[bot]
        book.open.discard(fill.client_order_id)
        book.position += fill.quantity if fill.side == BUY else -fill.quantity
        if count:
            self._fills(bot, SIDES[fill.side]).inc()
        self._observe(bot)

    def _observe(self, bot: str) -> None:
        book = self.books[bot]
        self._open(bot).set(len(book.open))
        self._position(bot).set(float(book.position))
