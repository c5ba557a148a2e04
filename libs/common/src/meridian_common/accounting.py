"""Position accounting in exact decimals: the ledger's arithmetic, shared with the backtests.

Average-cost basis per symbol. A fill that reduces a position realizes PnL on the closed part; a
fill that crosses zero closes the old position and opens the remainder on the other side. A
round trip (flat -> position -> flat or flipped) is a closed trade with its own net PnL, fees of
both legs and the funding paid while it was open included.

Funding (perpetuals): at each settlement the position pays quantity x mark x rate (a positive
rate: longs pay, shorts receive); `funding_paid` is the running total, negative when received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian.v1 import common_pb2
from meridian_common.money import MONEY_CONTEXT, ZERO, cash, price


def funding_paid(quantity: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
    """What a signed position pays at one settlement: quantity x mark x rate, to the cash
    quantum (positive rate: a long pays, a short receives; negative: received). The one rule
    the ledger, the bots and the research backtests settle funding by."""
    return cash(MONEY_CONTEXT.multiply(MONEY_CONTEXT.multiply(quantity, mark), rate))


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    entry_time_ms: int
    exit_time_ms: int
    direction: int  # +1 long, -1 short
    quantity: Decimal  # largest absolute size held
    entry_price: Decimal
    exit_price: Decimal
    gross_pnl: Decimal
    fees: Decimal
    funding: Decimal = ZERO  # paid while open (negative: received)

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees - self.funding


@dataclass(slots=True)
class _OpenTrade:
    entry_time_ms: int
    direction: int
    max_quantity: Decimal
    entry_price: Decimal
    gross_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    exit_value: Decimal = ZERO
    exit_quantity: Decimal = ZERO


@dataclass(slots=True)
class PositionBook:
    quantity: Decimal = ZERO  # signed
    average_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    trades_closed: int = 0
    funding_paid: Decimal = ZERO
    open_trade: _OpenTrade | None = field(default=None, repr=False)

    def apply_fill(self, side: int, quantity: Decimal, fill_price: Decimal, fee: Decimal,
                   time_ms: int) -> list[ClosedTrade]:
        """Book one fill; return the trades it closed (at most one, or one and a new opening)."""
        if quantity <= 0:
            raise ValueError(f"fill quantity must be positive, got {quantity}")
        if side not in (common_pb2.SIDE_BUY, common_pb2.SIDE_SELL):
            raise ValueError(f"fill side must be BUY or SELL, got {side}")
        signed = quantity if side == common_pb2.SIDE_BUY else -quantity
        self.fees_paid += fee
        closed: list[ClosedTrade] = []
        remaining = signed
        if self.quantity != 0 and (self.quantity > 0) != (signed > 0):
            closing = min(abs(signed), abs(self.quantity))
            direction = 1 if self.quantity > 0 else -1
            pnl = cash(MONEY_CONTEXT.multiply(fill_price - self.average_price, closing) * direction)
            self.realized_pnl += pnl
            share = fee if closing == abs(signed) else cash(fee * closing / abs(signed))
            trade = self.open_trade
            if trade is not None:
                trade.gross_pnl += pnl
                trade.fees += share
                trade.exit_value += fill_price * closing
                trade.exit_quantity += closing
            self.quantity += closing * (-direction)
            remaining = signed + closing * direction
            fee -= share
            if self.quantity == 0:
                self.average_price = ZERO
                if trade is not None:
                    closed.append(ClosedTrade(
                        trade.entry_time_ms, time_ms, trade.direction, trade.max_quantity,
                        trade.entry_price, price(trade.exit_value / trade.exit_quantity),
                        trade.gross_pnl, trade.fees, trade.funding))
                    self.trades_closed += 1
                self.open_trade = None
        if remaining != 0:
            self._increase(remaining, fill_price, fee, time_ms)
        return closed

    def _increase(self, signed: Decimal, fill_price: Decimal, fee: Decimal, time_ms: int) -> None:
        new_quantity = self.quantity + signed
        cost = self.average_price * abs(self.quantity) + fill_price * abs(signed)
        self.average_price = price(MONEY_CONTEXT.divide(cost, abs(new_quantity)))
        self.quantity = new_quantity
        if self.open_trade is None:
            self.open_trade = _OpenTrade(time_ms, 1 if signed > 0 else -1, abs(new_quantity),
                                         fill_price)
        else:
            self.open_trade.max_quantity = max(self.open_trade.max_quantity, abs(new_quantity))
            self.open_trade.entry_price = self.average_price
        self.open_trade.fees += fee

    def apply_funding(self, rate: Decimal, mark: Decimal) -> Decimal:
        """Settle one funding interval on the position held now, valued at `mark`; return the
        amount paid (negative: received). A flat position pays nothing."""
        if self.quantity == 0:
            return ZERO
        paid = funding_paid(self.quantity, mark, rate)
        self.funding_paid += paid
        if self.open_trade is not None:
            self.open_trade.funding += paid
        return paid

    def unrealized(self, mark: Decimal) -> Decimal:
        if self.quantity == 0:
            return ZERO
        return cash(MONEY_CONTEXT.multiply(mark - self.average_price, self.quantity))

    def net_pnl(self, mark: Decimal) -> Decimal:
        return self.realized_pnl + self.unrealized(mark) - self.fees_paid - self.funding_paid
