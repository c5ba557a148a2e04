"""Triple-barrier meta-labels: would the primary rule's trade have made money, net of costs?

For a primary entry decided at the close of row i (direction LONG or SHORT):
- entry: the open of row i + 1, as the paper executor fills a market order (never row i's
  close: that would be look-ahead by one fill);
- barriers, from the entry price: take-profit and stop-loss at fixed fractions, or at multiples
  of the ATR known at row i's close; a time barrier after `max_holding` candles;
- walk rows i + 1 .. i + max_holding with `triggers.check`, the per-candle exit decision the
  paper executor uses (its rules are in `meridian_common.triggers`): a row that touches the stop
  exits at the stop (at its open when it gaps through); one that trades through the take-profit
  (high > target for a long: a touch is not a fill of a resting limit) exits at the target,
  also when it opened beyond it; a row that reaches both counts as the stop (the candle's path
  inside the hour is unknown) unless it opened beyond one of them; otherwise the trade exits at
  the close of the last row;
- net return: `PaperFillModel.round_trip_return` (the shared slippage and fees: the stop and
  time exits are taker fills with slippage, the take-profit a maker fill at its price);
- label 1 when the net return is > 0.

Only rows after i are read, so a label never leaks into the features at i (the leakage test
mutates row i and everything before it). Entries too close to the end of the data to reach the
time barrier get no label (-1) and are dropped from training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from meridian.v1 import common_pb2, fill_pb2
from meridian_common.fills import PaperFillModel
from meridian_common.triggers import Exits, check

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
NO_LABEL = -1


@dataclass(frozen=True, slots=True)
class Barriers:
    take_profit: float = 0.03  # fraction of the entry price, or ATR multiple with use_atr
    stop_loss: float = 0.015
    max_holding: int = 48  # candles
    use_atr: bool = False

    def __post_init__(self) -> None:
        if self.take_profit <= 0 or self.stop_loss <= 0:
            raise ValueError(f"take_profit ({self.take_profit}) and stop_loss "
                             f"({self.stop_loss}) must be > 0")
        if self.max_holding < 1:
            raise ValueError(f"max_holding must be >= 1 candle, got {self.max_holding}")
        if not self.use_atr and self.stop_loss >= 1:
            raise ValueError(f"stop_loss {self.stop_loss} is a fraction of the price: must be < 1")

    def distances(self, entry: float, atr: float) -> tuple[float, float]:
        """(take-profit, stop-loss) distances in price units."""
        if self.use_atr:
            return self.take_profit * atr, self.stop_loss * atr
        return self.take_profit * entry, self.stop_loss * entry


class Labels(NamedTuple):
    label: Ints  # 1, 0, or NO_LABEL
    net_return: Floats  # NaN without a label
    exit_row: Ints  # the row the trade left at (its label's horizon end), -1 without a label
    barrier: list[str]  # "take_profit", "stop_loss", "time" or ""


def _exit(direction: int, entry: float, tp: float, sl: float, o: Sequence[float],
          h: Sequence[float], lo: Sequence[float], c: Floats, first: int,
          last: int) -> tuple[int, float, str, int]:
    """(exit row, exit price, barrier, exit liquidity) of the trade entered at `entry`: the
    executor's per-candle decision (`triggers.check`) over rows first .. last, else the time
    barrier at the last close (a market exit: taker)."""
    long = direction == common_pb2.DIRECTION_LONG
    exits = Exits(direction, stop_loss=entry - sl if long else entry + sl,
                  take_profit=entry + tp if long else entry - tp)
    for j in range(first, last + 1):
        hit = check(exits, o[j], h[j], lo[j])
        if hit is not None:
            return j, hit.price, hit.reason, hit.liquidity
    return last, float(c[last]), "time", fill_pb2.LIQUIDITY_TAKER


def triple_barrier(rows: Ints, directions: Ints, o: Floats, h: Floats, lo: Floats, c: Floats,
                   atr: Floats | None, barriers: Barriers, fills: PaperFillModel) -> Labels:
    """Labels for the entries at `rows` (LONG or SHORT) over one symbol's candle arrays."""
    n = c.size
    if barriers.use_atr and atr is None:
        raise ValueError("Barriers.use_atr needs the ATR array")
    label = np.full(rows.size, NO_LABEL, dtype=np.int64)
    net = np.full(rows.size, np.nan)
    exit_row = np.full(rows.size, -1, dtype=np.int64)
    barrier = [""] * rows.size
    # plain floats for the shared decision, read once (indexing a list is cheaper than numpy)
    ol, hl, ll = o.tolist(), h.tolist(), lo.tolist()
    for k, (i, d) in enumerate(zip(rows.tolist(), directions.tolist(), strict=True)):
        if d not in (common_pb2.DIRECTION_LONG, common_pb2.DIRECTION_SHORT):
            raise ValueError(f"row {i}: an entry must be LONG or SHORT, got direction {d}")
        last = i + barriers.max_holding
        if last >= n:
            continue  # the time barrier lies beyond the data: no label
        entry = float(o[i + 1])
        tp, sl = barriers.distances(entry, float(atr[i]) if atr is not None else np.nan)
        if not (tp > 0 and sl > 0):
            continue  # ATR not warm yet
        j, price, why, liquidity = _exit(d, entry, tp, sl, ol, hl, ll, c, i + 1, last)
        r = fills.round_trip_return(d, entry, price, liquidity)
        label[k], net[k], exit_row[k], barrier[k] = int(r > 0.0), r, j, why
    return Labels(label, net, exit_row, barrier)
