"""The context a feature row joins from other streams, tracked so that the join is deterministic.

A row for candle (symbol, open t, close c) is computed only when everything it joins is known
for certain, whatever order the input partitions arrive in:

- the reference symbol's 1-candle return at t (cross-asset): known once the reference's stream
  has reached t, i.e. a reference candle with open >= t has arrived, or a reference candle
  Watermark at or after c (no reference candle closing by c is still to come). The value is NaN
  when the reference has no candle at t (a gap on its side, or before its first candle).
- the last funding rate settled at or before c: known once the symbol's funding stream has
  reached c (a settlement or a funding Watermark at or after c).

So the rows equal the batch form's (`aligned_returns`, `funding_asof`) exactly, in the embedded
bus, over Kafka, and after a restart.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

NAN = math.nan


@dataclass(slots=True)
class ReferenceReturns:
    """One reference symbol's 1-candle log returns by open time, as far as its stream has got.

    Every return is kept (about 9k floats a year of hourly candles): a symbol whose partition is
    consumed late must still find the reference's return at its own open times.
    """

    returns: dict[int, float] = field(default_factory=dict)
    last_open: int = -1
    last_close: float = NAN
    closed_through: int = -1  # from Watermarks: no candle closing at or before this is to come

    def candle(self, open_ms: int, close: float) -> None:
        if open_ms <= self.last_open:
            return  # redelivered: the first one counts, as for the row itself
        if self.last_open >= 0:
            # the same expression FeatureState uses for ret_1, so the reference's own ret_1 and
            # every other symbol's copy of it are the same float
            self.returns[open_ms] = math.log(close / self.last_close)
        self.last_open, self.last_close = open_ms, close

    def watermark(self, event_time_ms: int) -> None:
        """A candle Watermark: no reference candle with close <= event_time_ms is to come."""
        self.closed_through = max(self.closed_through, event_time_ms)

    def known(self, open_ms: int, close_ms: int) -> bool:
        return self.last_open >= open_ms or self.closed_through >= close_ms

    def at(self, open_ms: int) -> float:
        return self.returns.get(open_ms, NAN)


@dataclass(slots=True)
class FundingHistory:
    """One symbol's settled funding rates and how far its funding stream has got."""

    times: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    progress: int = -1

    def settlement(self, funding_ms: int, rate: float) -> None:
        i = bisect.bisect_left(self.times, funding_ms)
        if i < len(self.times) and self.times[i] == funding_ms:
            self.rates[i] = rate  # a revision of a settlement not yet used by a row
        else:
            self.times.insert(i, funding_ms)
            self.rates.insert(i, rate)
        self.progress = max(self.progress, funding_ms)

    def watermark(self, event_time_ms: int) -> None:
        self.progress = max(self.progress, event_time_ms)

    def known(self, close_ms: int) -> bool:
        return self.progress >= close_ms

    def asof(self, close_ms: int) -> float:
        """The last rate settled at or before close_ms (NaN before the first)."""
        i = bisect.bisect_right(self.times, close_ms) - 1
        return self.rates[i] if i >= 0 else NAN

    def prune(self, before_ms: int) -> None:
        """Forget settlements no later row can use: all but the last one before `before_ms`."""
        keep = max(bisect.bisect_right(self.times, before_ms) - 1, 0)
        if keep:
            del self.times[:keep]
            del self.rates[:keep]
