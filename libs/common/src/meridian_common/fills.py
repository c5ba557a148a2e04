"""Paper fill model, shared by the paper executor and the backtests.

A market order fills at the open of the first candle whose open time is at or after the order's
event time (however late the order arrives), moved against the taker by the slippage. Using the
next open, never the signal candle's close, keeps look-ahead out of every simulated trade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.fees import FeeSchedule
from meridian_common.money import MONEY_CONTEXT


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

    def market(self, side: int, quantity: Decimal, candle_open: Decimal) -> SimulatedFill:
        shift = self.slippage_bps / Decimal(10_000)
        factor = Decimal(1) + shift if side == common_pb2.SIDE_BUY else Decimal(1) - shift
        price = MONEY_CONTEXT.multiply(candle_open, factor)
        liquidity = fill_pb2.LIQUIDITY_TAKER
        return SimulatedFill(price, self.fees.fee(quantity, price, liquidity), liquidity)

    def round_trip_return(self, direction: int, entry_open: float, exit_price: float) -> float:
        """Net return of a market-in, market-out trade as a fraction of the entry notional:
        the same slippage and taker fee as `market`, in floats for research and labels."""
        shift = float(self.slippage_bps) / 10_000.0
        taker = float(self.fees.taker)
        if direction == common_pb2.DIRECTION_LONG:
            entry, exit_ = entry_open * (1.0 + shift), exit_price * (1.0 - shift)
            gross = exit_ / entry - 1.0
        elif direction == common_pb2.DIRECTION_SHORT:
            entry, exit_ = entry_open * (1.0 - shift), exit_price * (1.0 + shift)
            gross = 1.0 - exit_ / entry
        else:
            raise ValueError(f"a round trip needs LONG or SHORT, got direction {direction}")
        return gross - taker * (entry + exit_) / entry
