"""What the live executor needs from an exchange, independent of ccxt.

The handler talks to a `Venue`; `CcxtVenue` is the implementation over ccxt's async clients. The
split keeps the decision logic (what to send, when to query, what a failure means) apart from
the wire format, and names every failure by what it means for the order:

    Rejected   the exchange answered and refused: the order does not exist (REJECTED)
    Duplicate  the exchange already has an order with this client id: query it, never resend
    Retryable  the exchange answered "not now" (rate limit, clock skew): not placed, try again
    Ambiguous  no usable answer (timeout, connection reset, gateway error, the exchange's own
               "internal error / status unknown" codes): the order may exist; it becomes
               UNKNOWN and only a query by client order id decides what it is
    Fatal      credentials or permissions: nothing can be traded until an operator fixes it
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from meridian_common.money import ZERO


class VenueError(Exception):
    """Base of the failures a venue call can end in; the message never holds a secret."""


class Rejected(VenueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code


class Duplicate(VenueError):
    """The client order id is already known to the exchange."""


class Retryable(VenueError):
    def __init__(self, message: str, retry_after_s: float = 1.0, *,
                 resync_clock: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.resync_clock = resync_clock


class Ambiguous(VenueError):
    pass


class Fatal(VenueError):
    pass


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str  # the exchange's id, e.g. "BTCUSDT"
    side: str  # "buy" | "sell"
    quantity: Decimal
    order_type: str = "market"  # "market" | "limit"
    limit_price: Decimal | None = None
    reduce_only: bool = False
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the exchange reports it."""

    client_order_id: str
    exchange_order_id: str
    symbol: str
    status: int  # order_event_pb2.OrderStatus
    filled: Decimal = ZERO
    average_price: Decimal | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One execution (trade) of an order."""

    exec_id: str
    client_order_id: str  # "" for orders the exchange created itself (attached stops)
    exchange_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    maker: bool
    time_ms: int
    # made by the exchange for a stop-loss / take-profit attached to a position (no client id)
    protective: bool = False


class Venue(Protocol):
    exchange: str  # our exchange name, the first part of the message keys
    attaches_stops: bool  # stop-loss / take-profit can ride on an order

    async def start(self) -> None:
        """Load markets and the clock offset; raises VenueError."""

    async def refresh(self) -> None:
        """Reload markets and the clock offset (hourly)."""

    def round_quantity(self, symbol: str, quantity: Decimal) -> Decimal:
        """Down to the market's step (never more than asked)."""
        ...

    def round_price(self, symbol: str, price: Decimal) -> Decimal:
        """To the market's tick."""
        ...

    async def submit(self, request: OrderRequest) -> VenueOrder: ...

    async def query(self, symbol: str, client_order_id: str) -> VenueOrder | None:
        """The order with this client id, open or closed; None if the exchange has none."""
        ...

    async def cancel(self, symbol: str, client_order_id: str) -> None: ...

    async def open_orders(self, symbol: str) -> list[VenueOrder]: ...

    async def fills(self, symbol: str, since_ms: int) -> list[VenueFill]:
        """Executions at or after `since_ms`, oldest first, every page."""
        ...

    async def order_fills(self, symbol: str, client_order_id: str) -> list[VenueFill]:
        """Every execution of one order, oldest first."""
        ...

    async def position(self, symbol: str) -> Decimal | None:
        """Signed position size (long > 0) in one-way mode; the net of both legs in hedge;
        None where there are no positions (spot)."""
        ...

    async def server_time_ms(self) -> int: ...

    async def close(self) -> None: ...
