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
from dataclasses import dataclass
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
    """Place an order; `limit_price` None means a market order. `tag` says why (for logs)."""

    client_order_id: str
    side: int
    quantity: Decimal
    limit_price: Decimal | None
    tag: str

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
