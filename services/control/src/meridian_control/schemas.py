"""Response bodies of the routes that read the ledger's and the risk gate's tables, the order
events, the status and the portfolio WebSocket.

Money and quantities are `Decimal` and go out as JSON strings, exactly as stored (the tables keep
`numeric`): a float would round what the ledger booked. Times are UTC date-times.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field


class Position(BaseModel):
    """One symbol's book in one account: the `positions` row with its latest `equity` mark."""

    account: str
    exchange: str
    symbol: str
    quantity: Decimal = Field(description="Signed: > 0 long, < 0 short, 0 flat.")
    side: Literal["long", "short", "flat"]
    average_price: Decimal = Field(description="Average entry price of the open quantity.")
    mark_price: Decimal | None = Field(description="Close of the last marked candle.")
    realized_pnl: Decimal
    unrealized_pnl: Decimal = Field(description="At mark_price; 0 when never marked.")
    fees_paid: Decimal
    funding_paid: Decimal = Field(description="Perpetual funding paid (negative: received).")
    net_pnl: Decimal = Field(description="realized + unrealized - fees - funding: this symbol's "
                                         "part of the account equity.")
    trades_closed: int
    as_of: datetime = Field(description="Close time of the candle the book was marked at.")


class Positions(BaseModel):
    positions: list[Position]


class Fill(BaseModel):
    time: datetime
    fill_id: str
    account: str
    client_order_id: str
    exchange: str
    symbol: str
    side: Literal["buy", "sell", "unspecified"]
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str


class Fills(BaseModel):
    fills: list[Fill] = Field(description="Newest first.")


class EquityPoint(BaseModel):
    time: datetime
    net_pnl: Decimal = Field(description="Sum of every symbol's latest net PnL at this time.")
    equity: Decimal = Field(description="initial_capital + net_pnl.")


class EquityCurve(BaseModel):
    """The account curve: at each marked time, capital + every symbol's latest net PnL (a
    symbol without a mark at that time counts with its previous one)."""

    account: str | None = Field(description="null when no account has been marked yet.")
    initial_capital: Decimal = Field(description="MERIDIAN_CONTROL_INITIAL_CAPITAL.")
    points_total: int = Field(description="Points of the curve in the range before "
                                          "downsampling.")
    points: list[EquityPoint] = Field(description="Oldest first; at most max_points: the last "
                                                  "point of each of max_points equal runs, so "
                                                  "the newest point is always exact.")


class RuleVerdict(BaseModel):
    rule: str
    detail: str = Field(description="The numbers the rule compared.")


class Decision(BaseModel):
    time: datetime
    decision_id: str
    signal_id: str
    exchange: str
    symbol: str
    approved: bool
    client_order_id: str = Field(description="'' when rejected.")
    side: str = Field(description="buy, sell, or '' (nothing to trade).")
    quantity: Decimal
    reference_price: Decimal
    reduce_only: bool
    failed_rules: list[RuleVerdict] = Field(description="The rules that did not pass, in "
                                                        "evaluation order; empty when "
                                                        "approved.")


class Decisions(BaseModel):
    decisions: list[Decision] = Field(description="Newest first.")


class Order(BaseModel):
    """An order's latest transition on order.event.v1."""

    client_order_id: str
    exchange_order_id: str
    exchange: str
    symbol: str
    status: str = Field(description="pending_submit, open, partially_filled, filled, canceled, "
                                    "rejected, expired or unknown.")
    side: Literal["buy", "sell", "unspecified"]
    quantity: Decimal | None
    filled_quantity: Decimal | None
    average_price: Decimal | None
    reason: str
    sequence: int = Field(description="Transitions of this order so far (the latest wins).")
    time: datetime = Field(description="Event time of the transition.")


class Orders(BaseModel):
    topic: str
    scanned: int = Field(description="Records read back from the end of the topic's partitions "
                                     "(MERIDIAN_CONTROL_ORDERS_SCAN per partition): an order "
                                     "whose last transition is older is not listed.")
    orders: list[Order] = Field(description="Newest transition first.")


class Dependency(BaseModel):
    reachable: bool
    detail: str | None = Field(description="Why not, in one line.")


class ServiceStatus(BaseModel):
    name: str
    last_event_time: datetime | None = Field(
        description="Event time of the latest record the service left in the database; null "
                    "when it stores nothing there or the database is unreachable.")
    source: str = Field(description="Where last_event_time comes from.")
    halted: bool = Field(description="A Halt for it is in force on control.v1.")
    halt_reason: str | None


class Promoted(BaseModel):
    name: str = Field(description="Model name, or the strategy of a config.")
    version: str | None = Field(description="The promoted version in the database.")
    promoted_at: datetime | None
    announced_version: str | None = Field(
        description="The latest promotion of this name on control.v1 (what the services "
                    "follow); differs from version after a promotion that was not announced.")


class SwitchState(BaseModel):
    engaged: bool
    reason: str | None
    actor: str | None
    time: str | None


class Status(BaseModel):
    time: datetime = Field(description="When this status was read (wall clock).")
    database: Dependency
    bus: Dependency
    services: list[ServiceStatus]
    kill_switch: SwitchState | None = Field(description="null when Kafka is unreachable.")
    breaker_level: str | None = Field(description="The risk gate's last announced level.")
    models: list[Promoted]
    configs: list[Promoted]


class AccountEquity(BaseModel):
    account: str
    time: datetime = Field(description="The latest mark of the account.")
    net_pnl: Decimal
    equity: Decimal


class PortfolioMessage(BaseModel):
    """A message of /v1/ws/portfolio: the book whenever it changed, or why it cannot be read."""

    type: Literal["portfolio", "error"]
    positions: list[Position] = Field(default_factory=list)
    equity: list[AccountEquity] = Field(default_factory=list,
                                        description="Each account's latest equity.")
    detail: str | None = Field(None, description="type error: why the database cannot be "
                                                 "read (the connection stays open and the "
                                                 "next change is sent).")
