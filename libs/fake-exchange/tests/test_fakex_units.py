"""The fake's building blocks without a network: clock, forming candles, paging, events."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meridian_common.marketdata import RawCandle
from meridian_fake_exchange import FakeClock
from meridian_fake_exchange.data import CandleSeries, MarketData
from meridian_fake_exchange.faults import Faults, TokenBucket
from meridian_fake_exchange.market import MarketView, nudged, partial_candle, select

HOUR = 3_600_000


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_clock_runs_at_speed_pauses_and_jumps() -> None:
    real = FakeMonotonic()
    clock = FakeClock(1_000_000, speed=3600.0, monotonic=real)
    real.now += 0.5
    assert clock.now_ms() == 1_000_000 + 1_800_000
    clock.pause()
    real.now += 10
    assert clock.now_ms() == 2_800_000
    clock.advance(200)
    assert clock.now_ms() == 2_800_200
    clock.resume()
    real.now += 0.001
    assert clock.now_ms() == 2_800_200 + 3600
    clock.set_speed(1.0)
    real.now += 1
    assert clock.now_ms() == 2_803_800 + 1000
    clock.set(5)
    assert clock.now_ms() == 5
    with pytest.raises(ValueError, match="non-negative"):
        clock.advance(-1)


prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)


@given(o=prices, c=prices, up=prices, down=prices, v=st.decimals(
    min_value=Decimal("0.001"), max_value=Decimal("1e6"), places=3),
    p=st.floats(min_value=0.0, max_value=0.999))
def test_partial_candle_is_consistent_and_never_final(o: Decimal, c: Decimal, up: Decimal,
                                                      down: Decimal, v: Decimal,
                                                      p: float) -> None:
    high, low = max(o, c) + up, max(Decimal("0.01"), min(o, c) - down)
    final = RawCandle(0, str(o), str(high), str(low), str(c), str(v))
    part = partial_candle(final, p, 2, 3)
    po, ph, pl, pc, pv = (Decimal(x) for x in part[1:])
    assert po == o
    assert low <= pl <= min(po, pc) <= max(po, pc) <= ph <= high
    assert Decimal(0) <= pv <= v
    assert part != final


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9999])
def test_partial_of_nearly_flat_candle_still_differs(p: float) -> None:
    final = RawCandle(0, "100.00", "100.01", "100.00", "100.01", "0.001")
    part = partial_candle(final, p, 2, 3)
    assert part != final
    assert partial_candle(RawCandle(0, "1", "1", "1", "1", "0"), p, 2, 3)[1:] == (
        "1", "1.00", "1.00", "1.00", "0.000")  # nothing can differ from a dead flat candle


def test_select_pages_from_start_or_back_from_end() -> None:
    times = [0, 10, 20, 30, 40, 50]
    assert select(times, 10, None, 2, 100) == (1, 3)
    assert select(times, None, None, 2, 100) == (4, 6)
    assert select(times, None, 30, 2, 100) == (2, 4)
    assert select(times, 10, 40, 10, 100) == (1, 5)
    assert select(times, 0, None, 10, 25) == (0, 3)  # nothing after "now"
    assert select(times, 60, None, 10, 100) == (6, 6)


def test_nudged_keeps_the_candle_consistent() -> None:
    true = RawCandle(0, "100.00", "101.00", "99.00", "100.95", "5")
    wrong = nudged(true, 2, None)
    assert Decimal(wrong.close) == Decimal("101.05")
    assert Decimal(wrong.high) == Decimal("101.05")
    assert nudged(true, 2, {"volume": "7"}).volume == "7"
    with pytest.raises(ValueError, match="unknown fields"):
        nudged(true, 2, {"colse": "1"})


def _view(rows: list[RawCandle], now: int) -> MarketView:
    series = CandleSeries("BTCUSDT", "1h", HOUR, [r.open_time_ms for r in rows], rows, 2, 3)
    data = MarketData(data_dir=None, symbols=("BTCUSDT",), timeframes=("1h",),  # type: ignore[arg-type]
                      candles={("BTCUSDT", "1h"): series})
    return MarketView(data, FakeClock(now, paused=True))


def test_events_coalesce_updates_but_keep_every_close() -> None:
    rows = [RawCandle(h * HOUR, "10", "12", "9", "11", "100") for h in (0, 1, 2, 4)]  # 3: gap
    view = _view(rows, 0)
    events = view.events("BTCUSDT", "1h", HOUR // 4, 4 * HOUR + HOUR // 2)
    summary = [(e.time_ms, e.served.candle.open_time_ms, e.served.closed) for e in events]
    assert summary == [(HOUR, 0, True), (2 * HOUR, HOUR, True), (3 * HOUR, 2 * HOUR, True),
                       (4 * HOUR + HOUR // 2, 4 * HOUR, False)]
    assert events[-1].served.candle.volume == "50.000"


def test_fault_counters_are_consumed_in_order() -> None:
    faults = Faults()
    faults.slow_left, faults.slow_seconds = 1, 0.5
    faults.rate_limit_left = 1
    faults.server_error_left = 1
    first, second, third = faults.decide(), faults.decide(), faults.decide()
    assert (first.delay_s, first.fault and first.fault.value) == (0.5, "rate_limit")
    assert (second.delay_s, second.fault and second.fault.value) == (0.0, "server_error")
    assert third.fault is None


def test_token_bucket_refills() -> None:
    real = FakeMonotonic()
    bucket = TokenBucket(2.0, clock=real)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    real.now += 0.5
    assert bucket.take() is True
    assert bucket.take() is False
