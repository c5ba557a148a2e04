"""The last price that trading sees: a deterministic path through the fake clock.

Orders fill against "the price now", which must agree with what a client reads from the
klines (the forming candle's close) and must be a pure function of the clock, so the same
clock moves give the same fills however often the engine happens to look. Per symbol the
finest served timeframe is used. Inside a candle the price moves linearly from its open to its
close (the forming close, rounded to the data's precision, exactly what REST serves); in a gap
after a candle it stays at that close. Wicks (high/low) are not on the path: a level touched
only by a wick does not fill.

`first_reach` answers "when, after t0 and up to t1, does the price first reach this level?"
exactly (to the millisecond) by walking the candles: each piece of the path is monotone, so
its end points tell whether it reaches the level and a binary search finds the first instant.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from meridian_fake_exchange.data import CandleSeries, MarketData


class Touch(NamedTuple):
    """The first instant the path reached a level, and the path price at that instant
    (the level itself or beyond it, when the price jumped over the level)."""

    time_ms: int
    price: Decimal


class PricePath:
    """Last prices of every served symbol, from its finest candle series."""

    def __init__(self, data: MarketData) -> None:
        self._series: dict[str, CandleSeries] = {}
        for (symbol, _), series in data.candles.items():
            best = self._series.get(symbol)
            if series.rows and (best is None or series.tf_ms < best.tf_ms):
                self._series[symbol] = series
        self._quantum = {s: Decimal(1).scaleb(-ser.price_dp) for s, ser in self._series.items()}

    def price_at(self, symbol: str, t: int) -> Decimal | None:
        """The last price at fake time `t`; None before the symbol's first candle."""
        series = self._series.get(symbol)
        if series is None:
            return None
        i = bisect_right(series.times, t) - 1
        if i < 0:
            return None
        return self._value(symbol, series, i, t)

    def first_reach(self, symbol: str, after: int, until: int, level: Decimal,
                    down: bool) -> Touch | None:
        """The first t with after < t <= until where price <= level (`down`) or >= level."""
        series = self._series.get(symbol)
        if series is None or until <= after:
            return None

        def hit(value: Decimal) -> bool:
            return value <= level if down else value >= level

        times, tf = series.times, series.tf_ms
        t = after + 1
        i = bisect_right(times, t) - 1
        if i < 0:  # before the first candle there is no price
            i, t = 0, times[0]
        while t <= until:
            last_ms = times[i] + tf - 1
            if t <= last_ms:  # inside the candle: a monotone straight line
                stop = min(last_ms, until)
                found = self._search(symbol, series, i, t, stop, hit)
                if found is not None:
                    return found
                t = stop + 1
                if t > until:
                    break
            following = times[i + 1] if i + 1 < len(times) else until + 1
            if t < following:  # a gap after the candle: flat at its close
                close = Decimal(series.rows[i].close)
                if hit(close):
                    return Touch(t, close)
                t = following
            i += 1
            if i >= len(times):
                break
        return None

    # -- internals -----------------------------------------------------------------------------

    def _value(self, symbol: str, series: CandleSeries, i: int, t: int) -> Decimal:
        row = series.rows[i]
        elapsed = t - series.times[i]
        if elapsed >= series.tf_ms:
            return Decimal(row.close)
        if elapsed <= 0:
            return Decimal(row.open)
        o = Decimal(row.open)
        moved = (Decimal(row.close) - o) * elapsed / series.tf_ms
        return (o + moved).quantize(self._quantum[symbol], ROUND_HALF_EVEN)

    def _search(self, symbol: str, series: CandleSeries, i: int, lo: int, hi: int,
                hit: Callable[[Decimal], bool]) -> Touch | None:
        """First t in [lo, hi] inside candle i where `hit(price)`; the line is monotone."""
        first = self._value(symbol, series, i, lo)
        if hit(first):
            return Touch(lo, first)
        if not hit(self._value(symbol, series, i, hi)):
            return None
        while hi - lo > 1:  # invariant: not hit at lo, hit at hi
            mid = (lo + hi) // 2
            if hit(self._value(symbol, series, i, mid)):
                hi = mid
            else:
                lo = mid
        return Touch(hi, self._value(symbol, series, i, hi))
