"""What a trading bot says and hears: candles in, fills in, order intents out.

A bot (`grid.GridBot`, `dca.DcaBot`) is a deterministic state machine with no I/O and no
clock: it is told each closed candle and each fill of its own orders and answers with intents
(place a limit or market order under a client order id it chose, cancel one of its orders).
The same object can then run inside a service (the intents go through the risk gate onto the
bus) and inside the paper simulation (`bot_sim`), and a replay of the same candles and fills
reproduces the same ids and orders, which is what lets the exchange and the ledger recognise a
resent order after a restart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

from meridian.v1 import common_pb2
from meridian_common.marketdata.candles import RawCandle
from meridian_common.money import dec

BUY: int = common_pb2.SIDE_BUY
SELL: int = common_pb2.SIDE_SELL

# Bybit (orderLinkId) and Binance (newClientOrderId) both accept up to 36 of these characters.
MAX_ORDER_ID = 36
_ID_CHARS = re.compile(r"[0-9a-z-]+")
_BOT_ID = re.compile(r"[0-9a-z]+(-[0-9a-z]+)*")
MAX_BOT_ID = 16  # leaves 20 characters for the level / cycle and sequence parts


def check_bot_id(bot_id: str) -> str:
    """A bot id usable as a client order id prefix; raise ValueError naming `bot_id`."""
    if not (0 < len(bot_id) <= MAX_BOT_ID and _BOT_ID.fullmatch(bot_id)):
        raise ValueError(f"bot_id: {bot_id!r} must be 1..{MAX_BOT_ID} characters of [0-9a-z], "
                         "words joined by single '-'")
    return bot_id


def order_id(*parts: str | int) -> str:
    """`part-part-...` as a client order id, checked against the exchanges' limits.

    Negative integers are written `n<abs>` so that '-' stays a separator only.
    """
    text = "-".join(f"n{-p}" if isinstance(p, int) and p < 0 else str(p) for p in parts)
    if len(text) > MAX_ORDER_ID or not _ID_CHARS.fullmatch(text):
        raise ValueError(f"client order id {text!r} is not <= {MAX_ORDER_ID} chars of [0-9a-z-]")
    return text


@dataclass(frozen=True, slots=True)
class Bar:
    """A closed candle in exact decimals; `close_ms` is when the bot hears about it."""

    open_ms: int
    close_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal

    @classmethod
    def from_raw(cls, raw: RawCandle, timeframe_ms: int) -> Bar:
        return cls(raw.open_time_ms, raw.open_time_ms + timeframe_ms, dec(raw.open, "open"),
                   dec(raw.high, "high"), dec(raw.low, "low"), dec(raw.close, "close"))


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Place an order; `limit_price` None means a market order. `tag` says why (for logs).

    `reduce_only`: the order may only shrink the position (the gate's rule order.reduce_only,
    the executor caps it). A one-market bot (grid, DCA) is long-only: `OneMarket` marks its
    sells; a bot trading several markets (a hedged pair) says it per order."""

    client_order_id: str
    side: int
    quantity: Decimal
    limit_price: Decimal | None
    tag: str
    reduce_only: bool = False

    def __post_init__(self) -> None:
        order_id(self.client_order_id)
        if self.side not in (BUY, SELL):
            raise ValueError(f"side: expected SIDE_BUY or SIDE_SELL, got {self.side!r}")
        if self.quantity <= 0:
            raise ValueError(f"quantity must be positive, got {self.quantity}")
        if self.limit_price is not None and self.limit_price <= 0:
            raise ValueError(f"limit_price must be positive, got {self.limit_price}")


@dataclass(frozen=True, slots=True)
class CancelOrder:
    client_order_id: str


Intent = PlaceOrder | CancelOrder


@dataclass(frozen=True, slots=True)
class BotFill:
    """A fill of one of the bot's orders: the whole order, except a sell capped to the position
    (the executor treats the bots' sells as reduce-only)."""

    client_order_id: str
    side: int
    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: int
    time_ms: int


class Bot(Protocol):
    """What a host (a service or `bot_sim`) needs from a bot."""

    @property
    def bot_id(self) -> str:
        """The prefix of every client order id the bot makes."""
        ...

    def on_candle(self, bar: Bar) -> list[Intent]:
        """The bar has closed: orders to place or cancel now."""
        ...

    def on_fill(self, fill: BotFill) -> list[Intent]:
        """One of the bot's orders filled: orders to place or cancel in reaction."""
        ...

    def on_rejected(self, client_order_id: str, reason: str) -> list[Intent]:
        """An order was refused (risk limits, exchange): the bot forgets it."""
        ...


@dataclass(frozen=True, slots=True)
class Settlement:
    """A perpetual's funding settlement (md.funding.v1): the per-interval rate, positive when
    longs pay shorts, settled at `time_ms`."""

    time_ms: int
    rate: Decimal


Routed = tuple[str, Intent]  # (exchange:symbol key, intent)


class MarketsBot(Protocol):
    """What the bots host drives: a bot on one or more exchange:symbol keys.

    The host tells it, per time, its rejections, then its fills, then the candles of all its
    keys that opened at that time in one call (`on_candles`; a key missing a candle at that
    time is absent from the mapping), and funding settlements of its perpetual keys before the
    candles that open at or after them. Every answer names the key it trades."""

    @property
    def bot_id(self) -> str:
        ...

    @property
    def keys(self) -> tuple[str, ...]:
        """The exchange:symbol keys it trades, in a fixed order."""
        ...

    @property
    def funding_keys(self) -> tuple[str, ...]:
        """The keys whose md.funding.v1 it needs (a subset of `keys`)."""
        ...

    def on_candles(self, bars: Mapping[str, Bar]) -> list[Routed]:
        ...

    def on_fill(self, key: str, fill: BotFill) -> list[Routed]:
        ...

    def on_rejected(self, key: str, client_order_id: str, reason: str) -> list[Routed]:
        ...

    def on_funding(self, key: str, settlement: Settlement) -> list[Routed]:
        ...


class OneMarket:
    """A one-market `Bot` (grid, DCA) as a `MarketsBot` on `key`. These bots are long-only on
    spot: a sell only ever sells inventory they hold, so every sell is marked reduce-only."""

    __slots__ = ("bot", "key")

    def __init__(self, bot: Bot, key: str) -> None:
        self.bot = bot
        self.key = key

    @property
    def bot_id(self) -> str:
        return self.bot.bot_id

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    @property
    def funding_keys(self) -> tuple[str, ...]:
        return ()

    def _routed(self, intents: list[Intent]) -> list[Routed]:
        return [(self.key, replace(i, reduce_only=True)
                 if isinstance(i, PlaceOrder) and i.side == SELL else i) for i in intents]

    def on_candles(self, bars: Mapping[str, Bar]) -> list[Routed]:
        bar = bars.get(self.key)
        return [] if bar is None else self._routed(self.bot.on_candle(bar))

    def on_fill(self, key: str, fill: BotFill) -> list[Routed]:
        return self._routed(self.bot.on_fill(fill))

    def on_rejected(self, key: str, client_order_id: str, reason: str) -> list[Routed]:
        return self._routed(self.bot.on_rejected(client_order_id, reason))

    def on_funding(self, key: str, settlement: Settlement) -> list[Routed]:
        return []
