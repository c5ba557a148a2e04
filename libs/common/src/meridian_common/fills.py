"""Paper fill model, shared by the paper executor and the backtests.

A market order fills at the open of the first candle whose open time is at or after the order's
event time (however late the order arrives), moved against the taker by the slippage. Using the
next open, never the signal candle's close, keeps look-ahead out of every simulated trade.

Orders that wait for a price (stop-loss, take-profit, trailing stop, liquidation, limit orders)
are triggered by `meridian_common.triggers`, which says on which candle, at which price and as
maker or taker; `PaperFillModel.fill` turns that into a fill price and a fee. Every taker fill
is slipped like a market order (a limit order never past its limit, a liquidation not at all),
every maker fill is at its own price; fees come from the `FeeSchedule`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.money import MONEY_CONTEXT, cash
from meridian_common.triggers import LIQUIDATION, Hit


@dataclass(frozen=True, slots=True)
class SimulatedFill:
    price: Decimal
    fee: Decimal
    liquidity: int


@dataclass(frozen=True, slots=True)
class PaperFillModel:
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    slippage_bps: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.slippage_bps <= Decimal(1000):
            raise ValueError(f"slippage_bps must be in [0, 1000], got {self.slippage_bps}")

    def _slipped(self, side: int, price: Decimal) -> Decimal:
        """`price` moved against a taker on `side` by the slippage."""
        shift = self.slippage_bps / Decimal(10_000)
        factor = Decimal(1) + shift if side == common_pb2.SIDE_BUY else Decimal(1) - shift
        return MONEY_CONTEXT.multiply(price, factor)

    def market(self, side: int, quantity: Decimal, candle_open: Decimal) -> SimulatedFill:
        price = self._slipped(side, candle_open)
        liquidity = fill_pb2.LIQUIDITY_TAKER
        return SimulatedFill(price, self.fees.fee(quantity, price, liquidity), liquidity)

    def fill(self, side: int, quantity: Decimal, hit: Hit[Decimal],
             liquidation_fee: Decimal | None = None) -> SimulatedFill:
        """The fill of an order `meridian_common.triggers` found triggered on a candle.

        side: the order's side (the closing side for a protective exit, `Exits.closing_side`).
        - maker (take-profit, resting limit): at the hit price, maker fee;
        - taker stop-loss / trailing stop: the hit price (the stop, or the open on a gap)
          slipped like a market order, taker fee;
        - taker limit (marketable at the open): slipped, but never past the limit price;
        - liquidation: at the liquidation price, no slippage (the exchange takes the position
          over there). Fee: `liquidation_fee` when given (for an isolated position the margin
          left at that price, `triggers.isolated_liquidation(...).margin_left`, so the loss is
          exactly the initial margin), else the taker fee.
        """
        price = hit.price
        if hit.liquidity == fill_pb2.LIQUIDITY_TAKER and hit.reason != LIQUIDATION:
            price = self._slipped(side, price)
            if hit.limit is not None:
                price = min(price, hit.limit) if side == common_pb2.SIDE_BUY else \
                    max(price, hit.limit)
        if hit.reason == LIQUIDATION and liquidation_fee is not None:
            fee = cash(liquidation_fee)
        else:
            fee = self.fees.fee(quantity, price, hit.liquidity)
        return SimulatedFill(price, fee, hit.liquidity)

    def round_trip_return(self, direction: int, entry_open: float, exit_price: float,
                          exit_liquidity: int = fill_pb2.LIQUIDITY_TAKER) -> float:
        """Net return of a market-in trade as a fraction of the entry notional, in floats for
        research and labels: the same slippage and fees as `market` and `fill`. A taker exit
        (market, stop) is slipped and pays the taker fee; a maker exit (take-profit) is at
        `exit_price` and pays the maker fee."""
        shift = float(self.slippage_bps) / 10_000.0
        taker = float(self.fees.taker)
        maker_exit = exit_liquidity == fill_pb2.LIQUIDITY_MAKER
        exit_shift = 0.0 if maker_exit else shift
        if direction == common_pb2.DIRECTION_LONG:
            entry, exit_ = entry_open * (1.0 + shift), exit_price * (1.0 - exit_shift)
            gross = exit_ / entry - 1.0
        elif direction == common_pb2.DIRECTION_SHORT:
            entry, exit_ = entry_open * (1.0 - shift), exit_price * (1.0 + exit_shift)
            gross = 1.0 - exit_ / entry
        else:
            raise ValueError(f"a round trip needs LONG or SHORT, got direction {direction}")
        if maker_exit:
            return gross - (taker * entry + float(self.fees.maker) * exit_) / entry
        return gross - taker * (entry + exit_) / entry
