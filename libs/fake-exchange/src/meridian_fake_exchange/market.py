"""What the market looks like at a fake instant: closed candles, the forming one, corrections.

Both exchange front-ends (bybit.py, binance.py) ask this module the same questions and only
format the answers differently, so "the candle containing now is never served with its final
values" and "a corrected candle is wrong until close + delay, right afterwards" hold identically
for REST and WebSocket and for both venues.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from meridian_common.marketdata import RawCandle, timeframe_ms
from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.data import CandleSeries, FundingRow, MarketData


class Served(NamedTuple):
    """A candle as served at some instant: values plus whether it is closed (final)."""

    candle: RawCandle
    closed: bool


class Event(NamedTuple):
    """One WebSocket kline push: at fake time `time_ms`, candle values, closed or not.

    `order` breaks ties at the same instant: a candle's close (0) goes before a correction
    (1), which goes before the next candle's first update (2) - the order a real feed has.
    """

    time_ms: int
    order: int
    symbol: str
    timeframe: str
    served: Served


@dataclass(frozen=True)
class Correction:
    """A candle first published wrong and corrected later.

    Until `effective_ms` (= close + delay) REST and the WebSocket close message carry `wrong`;
    from `effective_ms` on REST serves `true`, and a WebSocket message with `true` is pushed.
    """

    symbol: str
    timeframe: str
    open_time_ms: int
    wrong: RawCandle
    true: RawCandle
    effective_ms: int


def _quantum(dp: int) -> Decimal:
    return Decimal(1).scaleb(-dp)


def partial_candle(final: RawCandle, progress: float, price_dp: int,
                   volume_dp: int) -> RawCandle:
    """The candle as it looks `progress` (0..1) of the way through its interval.

    Prices move linearly from the open towards the final close/high/low, and volume grows
    linearly, rounded to the series' precision. That keeps OHLC consistent (low <= open, close
    <= high) and differs from the final values unless the final candle is completely flat with
    zero volume (then there is nothing that could differ).
    """
    p = Decimal(repr(min(max(progress, 0.0), 1.0)))
    pq, vq = _quantum(price_dp), _quantum(volume_dp)
    o = Decimal(final.open)

    def towards(target: str) -> str:
        value = (o + (Decimal(target) - o) * p).quantize(pq, ROUND_HALF_EVEN)
        return format(value, "f")

    volume = (Decimal(final.volume) * p).quantize(vq, ROUND_HALF_EVEN)
    candle = RawCandle(final.open_time_ms, final.open, towards(final.high), towards(final.low),
                       towards(final.close), format(volume, "f"))
    if candle[1:] == final[1:] and p > 0:
        # rounding brought everything back to the final numbers: show the opening state instead
        return partial_candle(final, 0.0, price_dp, volume_dp)
    return candle


def nudged(true: RawCandle, price_dp: int, values: Mapping[str, str] | None) -> RawCandle:
    """The wrong version of a candle: explicit `values`, or the close moved up 0.1 % (at least
    one price step), with the high raised if needed so the candle stays consistent."""
    if values:
        unknown = set(values) - {"open", "high", "low", "close", "volume"}
        if unknown:
            raise ValueError(f"correction values has unknown fields {sorted(unknown)}")
        wrong = true._replace(**{k: str(v) for k, v in values.items()})
    else:
        step = _quantum(price_dp)
        close = Decimal(true.close)
        bumped = max((close * Decimal("1.001")).quantize(step, ROUND_HALF_EVEN), close + step)
        high = max(Decimal(true.high), bumped)
        wrong = true._replace(close=format(bumped, "f"), high=format(high, "f"))
    if wrong[1:] == true[1:]:
        raise ValueError("correction values equal the true candle; nothing would be corrected")
    return wrong


def select(times: list[int], start: int | None, end: int | None, limit: int,
           upper: int) -> tuple[int, int]:
    """Index range [lo, hi) of the rows a paginated endpoint returns.

    Times are inclusive on both ends and never above `upper` (now). When a start is given the
    page is the first `limit` rows from it; otherwise it is the last `limit` rows up to
    end/now. This is how Binance documents its klines/fundingRate endpoints and how Bybit's
    kline and funding history behave for a start-only or end-only query.
    """
    top = upper if end is None else min(end, upper)
    lo = 0 if start is None else bisect_left(times, start)
    hi = bisect_right(times, top)
    if hi <= lo:
        return lo, lo
    if start is not None:
        return lo, min(hi, lo + limit)
    return max(lo, hi - limit), hi


class MarketView:
    """The data seen through the fake clock, plus the corrections injected so far."""

    def __init__(self, data: MarketData, clock: FakeClock,
                 update_fractions: tuple[float, ...] = (0.0, 0.5)) -> None:
        if not update_fractions or any(not 0.0 <= f < 1.0 for f in update_fractions):
            raise ValueError(f"update fractions must be in [0, 1), got {update_fractions}")
        self.data = data
        self.clock = clock
        self.update_fractions = tuple(sorted(set(update_fractions)))
        self._corrections: dict[tuple[str, str, int], Correction] = {}

    # -- corrections ---------------------------------------------------------------------------

    def add_correction(self, symbol: str, timeframe: str, open_time_ms: int,
                       values: Mapping[str, str] | None, delay_ms: int | None) -> Correction:
        series = self._require(symbol, timeframe)
        true = series.get(open_time_ms)
        if true is None:
            raise ValueError(f"no {symbol} {timeframe} candle opens at {open_time_ms} "
                             "(a gap in the data or off the grid)")
        delay = series.tf_ms if delay_ms is None else delay_ms
        if delay <= 0:
            raise ValueError(f"correction delay must be > 0 ms, got {delay}")
        correction = Correction(symbol, timeframe, open_time_ms,
                                nudged(true, series.price_dp, values), true,
                                open_time_ms + series.tf_ms + delay)
        self._corrections[(symbol, timeframe, open_time_ms)] = correction
        return correction

    def clear_corrections(self) -> None:
        self._corrections.clear()

    @property
    def corrections(self) -> list[Correction]:
        return list(self._corrections.values())

    def final_at(self, series: CandleSeries, raw: RawCandle, at_ms: int) -> RawCandle:
        """The final values of `raw` as published at `at_ms` (wrong while a correction is due)."""
        if self._corrections:
            fix = self._corrections.get((series.symbol, series.timeframe, raw.open_time_ms))
            if fix is not None and at_ms < fix.effective_ms:
                return fix.wrong
        return raw

    # -- REST ----------------------------------------------------------------------------------

    def klines(self, symbol: str, timeframe: str, start: int | None, end: int | None,
               limit: int, *, align_start: bool = False) -> list[Served]:
        """Candles for a kline request, ascending, as of now.

        `align_start` includes the candle that contains `start` (Bybit does, Binance starts at
        the first open time >= start).
        """
        series = self.data.series(symbol, timeframe)
        if series is None:
            return []
        now = self.clock.now_ms()
        if start is not None and align_start:
            start -= start % series.tf_ms
        lo, hi = select(series.times, start, end, limit, now)
        if hi <= lo:
            return []
        rows = series.rows[lo:hi]
        # only the newest row of a page can still be forming; the rest are closed
        if self._corrections:
            head = [Served(self.final_at(series, raw, now), True) for raw in rows[:-1]]
        else:
            head = [Served(raw, True) for raw in rows[:-1]]
        head.append(self.served(series, rows[-1], now))
        return head

    def served(self, series: CandleSeries, raw: RawCandle, now: int) -> Served:
        final = self.final_at(series, raw, now)
        elapsed = now - raw.open_time_ms
        if elapsed >= series.tf_ms:
            return Served(final, True)
        return Served(partial_candle(final, elapsed / series.tf_ms, series.price_dp,
                                     series.volume_dp), False)

    def funding(self, symbol: str, start: int | None, end: int | None,
                limit: int) -> list[FundingRow]:
        """Settlements for a funding-history request, ascending, only those already past."""
        series = self.data.funding.get(symbol)
        if series is None:
            return []
        lo, hi = select(series.times, start, end, limit, self.clock.now_ms())
        return series.rows[lo:hi]

    # -- WebSocket -----------------------------------------------------------------------------

    def snapshot(self, symbol: str, timeframe: str, now: int) -> list[Event]:
        """What a new subscriber is sent at once: the forming candle, if there is one."""
        series = self.data.series(symbol, timeframe)
        if series is None:
            return []
        raw = series.get(now - now % series.tf_ms)
        if raw is None:
            return []
        return [Event(now, 2, symbol, timeframe, self.served(series, raw, now))]

    def events(self, symbol: str, timeframe: str, after: int, until: int) -> list[Event]:
        """Kline pushes with after < time <= until, in time order.

        Each candle gets an update at every configured fraction of its interval while it forms
        and its final values at its close. If several of one candle's updates fall into the
        window only the latest is sent (the candle moved on; a real feed coalesces too), but
        every close in the window is sent, in order, however far the clock jumped.
        """
        series = self.data.series(symbol, timeframe)
        if series is None or until <= after:
            return []
        tf = series.tf_ms
        out: list[Event] = []
        first = bisect_right(series.times, after - tf)
        last = bisect_right(series.times, until)
        for raw in series.rows[first:last]:
            close = raw.open_time_ms + tf
            if after < close <= until:
                out.append(Event(close, 0, symbol, timeframe,
                                 Served(self.final_at(series, raw, close), True)))
            elif close > until:
                event = self._latest_update(series, raw, after, until)
                if event is not None:
                    out.append(event)
        for fix in self._corrections.values():
            if (fix.symbol, fix.timeframe) == (symbol, timeframe) \
                    and after < fix.effective_ms <= until:
                out.append(Event(fix.effective_ms, 1, symbol, timeframe, Served(fix.true, True)))
        out.sort(key=lambda e: (e.time_ms, e.order))
        return out

    def _latest_update(self, series: CandleSeries, raw: RawCandle, after: int,
                       until: int) -> Event | None:
        for fraction in reversed(self.update_fractions):
            at = raw.open_time_ms + int(fraction * series.tf_ms)
            if after < at <= until:
                final = self.final_at(series, raw, at)
                candle = partial_candle(final, fraction, series.price_dp, series.volume_dp)
                return Event(at, 2, series.symbol, series.timeframe, Served(candle, False))
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _require(self, symbol: str, timeframe: str) -> CandleSeries:
        timeframe_ms(timeframe)  # validates the notation
        series = self.data.series(symbol, timeframe)
        if series is None:
            raise ValueError(f"the server has no {symbol} {timeframe} data; configured: "
                             f"{sorted(self.data.candles)}")
        return series
